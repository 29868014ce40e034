"""The judge protocol: one ordered pair in, one verdict (or a typed error) out.

Providers only build requests, parse answers and classify errors into the
:mod:`cj_runner.errors` tree; the caller (:mod:`cj_runner.judges.retry` driven by the
executor) owns retries, backoff and the budget.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cj_runner.core.models import Winner


@dataclass(frozen=True, slots=True)
class EssayText:
    """One essay as shown to the judge."""

    essay_id: str
    text: str
    checksum: str
    is_anchor: bool = False
    known_grade: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AssignmentText:
    """The assignment's texts used in the prompt (each may be empty)."""

    instructions: str = ""
    student_prompt: str = ""
    rubric: str = ""


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """One ordered pair to judge: ``essay_a`` is shown in position A.

    ``attempt`` counts calls for this comparison (1 = first); ``repeat_index`` counts how
    often this exact ordered pair was asked before in the batch (0 = first time), so a
    cache and a deterministic mock can tell repeats apart. ``ask_index`` counts the
    earlier comparisons of this ordered pair planned in the batch (whatever their
    outcome), so a comparison asked again after a failure is a new draw for the mock,
    while the cache keys on ``repeat_index``. ``after_truncation`` is set when this
    comparison's last answer was cut off at the token limit: the judge asks with its
    larger allowance (``max_tokens_ceiling``). ``judge`` names the panel member to ask
    (``None``: the panel's seeded choice; a single judge ignores it).
    """

    essay_a: EssayText
    essay_b: EssayText
    assignment: AssignmentText = AssignmentText()
    attempt: int = 1
    repeat_index: int = 0
    ask_index: int = 0
    after_truncation: bool = False
    judge: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's answer to one ordered pair (``tokens_cached``: the part of ``tokens_in``
    the provider read from its prompt cache)."""

    winner: Winner
    confidence: int
    justification: str
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    latency_s: float = 0.0
    model: str = ""
    prompt_hash: str = ""
    cached: bool = False
    #: the provider's id for the request (header ``x-request-id`` / ``request-id``)
    request_id: str | None = None


@runtime_checkable
class Judge(Protocol):
    """What the executor needs from a judge.

    ``judge`` returns a :class:`Verdict` or raises a
    :class:`cj_runner.errors.JudgeError` subclass; it never retries by itself.

    A judge may also define ``cache_key(request) -> str``: the judgment cache's key for
    ``request``, a hash of everything the judge would send (endpoint, model, the full
    rendered messages, sampling and reasoning parameters) and the repeat index; see
    :func:`request_key`. A judge without it is keyed by :func:`fallback_cache_key`.
    It may define ``price_cached_input_per_mtok`` (float or None): the price of input
    tokens read from the provider's prompt cache.
    """

    name: str
    model: str
    prompt_hash: str
    price_input_per_mtok: float
    price_output_per_mtok: float

    async def judge(self, request: JudgeRequest) -> Verdict: ...

    async def aclose(self) -> None: ...


def request_key(endpoint: str, request_body: Mapping[str, Any], repeat_index: int) -> str:
    """The judgment cache key of one request: a SHA-256 over the endpoint, the request body
    as it would be sent (canonical JSON: sorted keys) and the repeat index.

    Two requests share a key only when they would send the same bytes to the same place;
    the repeat index keeps deliberate repeats of one ordered pair apart.
    """
    blob = json.dumps(
        {"endpoint": endpoint, "body": request_body, "repeat_index": repeat_index},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def fallback_cache_key(judge: Judge, request: JudgeRequest) -> str:
    """The cache key of a judge without ``cache_key``: its name, model and prompt hash, the
    assignment's texts, the ordered essays and the repeat index."""
    return request_key(
        f"judge:{judge.name}",
        {
            "model": judge.model,
            "prompt_hash": judge.prompt_hash,
            "instructions": request.assignment.instructions,
            "student_prompt": request.assignment.student_prompt,
            "rubric": request.assignment.rubric,
            "essay_a": request.essay_a.checksum,
            "essay_b": request.essay_b.checksum,
        },
        request.repeat_index,
    )


def cache_key_of(judge: Judge, request: JudgeRequest) -> str:
    """``judge.cache_key(request)`` when the judge defines it, else the fallback key."""
    method = getattr(judge, "cache_key", None)
    if callable(method):
        return str(method(request))
    return fallback_cache_key(judge, request)
