"""What the recorder writes about a judge call: the planned row, the call sent, its result
(and the key of a paid answer in the judgment cache)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from cj_runner.errors import StorageError
from cj_runner.storage.storable import storable_justification, storable_message, storable_text


class UnstorableAnswer(StorageError):
    """A call's result could not be stored as it came; it was stored as the call's error
    (status ``failed``, ``error_kind`` ``unstorable``), with ``result`` the row written."""

    def __init__(self, message: str, result: AttemptResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class PlannedRow:
    """A comparison of a wave, stored before any call is sent."""

    slot: int
    a_idx: int
    b_idx: int
    mode: str
    wave: int
    repeat_index: int
    judge: str | None = None  # a panel batch's judge for this comparison


@dataclass(frozen=True)
class SentAttempt:
    """One call about to be sent."""

    slot: int
    attempt: int
    call_no: int
    a_idx: int
    b_idx: int
    mode: str
    wave: int
    repeat_index: int
    model: str
    prompt_hash: str
    sent_at: datetime
    judge: str | None = None  # a panel batch's judge for this comparison


@dataclass(frozen=True)
class CacheKey:
    """Where a paid answer goes in the judgment cache: the request's hash (the key) and,
    for reading only, the model, the ordered essays and the repeat index."""

    request_key: str
    model: str
    checksum_a: str
    checksum_b: str
    repeat_index: int


@dataclass(frozen=True)
class AttemptResult:
    """What came back for one call."""

    slot: int
    attempt: int
    status: str
    received_at: datetime
    winner: str | None = None
    confidence: int | None = None
    justification: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    latency_s: float | None = None
    cached: bool = False
    #: for a paid answer: where it goes in the judgment cache
    cache_key: CacheKey | None = None
    #: for an answer taken from the cache: the batch that paid for it
    cache_source: str | None = None
    #: the provider's id for the request (logged with ``--verbose``; not stored)
    request_id: str | None = None


def storable_result(r: AttemptResult) -> AttemptResult:
    """``r`` with every text made storable (:mod:`cj_runner.storage.storable`)."""
    return replace(
        r,
        winner=storable_text(r.winner) if r.winner is not None else None,
        justification=storable_justification(r.justification),
        error_kind=storable_text(r.error_kind) if r.error_kind is not None else None,
        error_message=storable_message(r.error_message),
    )
