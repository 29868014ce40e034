"""Scripted faults of the mock judge server (:class:`FaultScript`) and the requests it
records (:class:`RecordedRequest`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal[
    "rate_limit",  # 429, with Retry-After when ``retry_after`` is set
    "server_error",  # ``status`` (default 500) with an error body
    "status",  # any ``status`` with an error body (401, 400, 529, ...)
    "delay",  # wait ``delay_s`` then answer normally (beyond a client timeout)
    "malformed_body",  # 200 with a body that is not JSON
    "malformed_answer",  # 200, well-formed envelope, answer text that is not the JSON
    "empty_answer",  # 200 with an empty answer
    "refusal",  # 200 with a refusal
    "close",  # close the connection without any response
]


@dataclass(frozen=True)
class Fault:
    """One scripted answer of the server (see :data:`FaultKind`)."""

    kind: FaultKind
    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    #: Put the received credentials into the error message, as careless servers do (to
    #: test that clients scrub keys from their errors).
    echo_credentials: bool = False


class FaultScript:
    """Faults by request number: ``faults[n]`` for the n-th judge request (0-based; ``None``
    answers normally), then ``then`` for every later one. ``reject_response_format``
    answers 400 to any OpenAI request carrying ``response_format``. Thread-safe."""

    def __init__(
        self,
        faults: Sequence[Fault | None] = (),
        *,
        then: Fault | None = None,
        reject_response_format: bool = False,
    ) -> None:
        self.faults = list(faults)
        self.then = then
        self.reject_response_format = reject_response_format
        self.served = 0
        self._lock = threading.Lock()

    @classmethod
    def first(cls, n: int, fault: Fault) -> FaultScript:
        """``fault`` for the first ``n`` requests, then normal answers."""
        return cls([fault] * n)

    @classmethod
    def always(cls, fault: Fault) -> FaultScript:
        """``fault`` for every request."""
        return cls(then=fault)

    def next_fault(self) -> Fault | None:
        """The fault for the next request (and count it)."""
        with self._lock:
            index = self.served
            self.served += 1
        return self.faults[index] if index < len(self.faults) else self.then


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.monotonic)
