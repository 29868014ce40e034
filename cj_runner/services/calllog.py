"""The per-call log of ``cj-run execute|resume --verbose / --log-file PATH``.

One line per stored attempt: UTC time, wave, slot, attempt, call number, mode, status,
error kind, latency, tokens, cached, the provider's request id (``x-request-id`` /
``request-id`` header, else the answer's ``id``; ``-`` when the call got no answer) and the
error text. Keys never appear: error texts
are scrubbed by the judges before they are stored, and nothing else here comes from
the request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["CallLog", "format_call"]


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_call(slot: Any, result: Any, now: datetime | None = None) -> str:
    """One log line for a stored attempt (``slot``: the comparison, ``result``: its answer)."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    fields = [
        stamp,
        f"wave={slot.wave}",
        f"slot={slot.slot}",
        f"attempt={result.attempt}",
        f"mode={slot.mode}",
        f"status={result.status}",
        f"kind={_value(result.error_kind)}",
        f"latency_s={_value(result.latency_s)}",
        f"tokens={_value(result.tokens_in)}/{_value(result.tokens_out)}",
        f"cached={'yes' if result.cached else 'no'}",
        f"request_id={_value(result.request_id)}",
    ]
    line = " ".join(fields)
    if result.error_message:
        line += " error=" + " ".join(str(result.error_message).split())
    return line


class CallLog:
    """Writes :func:`format_call` lines to open text streams (stderr, a log file)."""

    def __init__(self, *streams: TextIO, clock: Callable[[], datetime] | None = None) -> None:
        self.streams = [s for s in streams if s is not None]
        self._clock = clock

    def __bool__(self) -> bool:
        return bool(self.streams)

    def __call__(self, slot: Any, result: Any) -> None:
        line = format_call(slot, result, self._clock() if self._clock else None)
        for stream in self.streams:
            stream.write(line + "\n")
            stream.flush()

    def note(self, text: str) -> None:
        """A free line (start, stop, the judge's URL)."""
        stamp = (self._clock() if self._clock else datetime.now(UTC)).isoformat(
            timespec="milliseconds"
        )
        for stream in self.streams:
            stream.write(f"{stamp} {text}\n")
            stream.flush()
