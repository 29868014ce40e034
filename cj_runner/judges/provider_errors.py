"""What a provider's error answer means: its class, how long to wait, what it refused.

Classification of a non-2xx answer (the body's ``error.type``/``error.code`` as the
OpenAI and Anthropic APIs send them, then the status):

=======================================================  ===============================
401, ``authentication_error``                            ``JudgeUnavailable("auth")``
403, ``permission_error``                                ``JudgeUnavailable("permission")``
402, ``billing_error``, ``insufficient_quota`` (OpenAI's  ``JudgeUnavailable("quota")``
429), "credit balance is too low" (Anthropic's 400)
404, ``model_not_found``, ``not_found_error``            ``JudgeUnavailable("model_not_found")``
413, ``context_length_exceeded``, "prompt is too long"   ``FatalJudgeError("too_long")``
                                                         (this call only)
4xx ``invalid_prompt``, ``content_policy_violation``,    ``FatalJudgeError("refused")``
``content_filter`` (the pair's text was flagged)         (this call only)
429                                                      ``RateLimited``
408                                                      ``TransientJudgeError("timeout")``
409, 5xx, 529 (overloaded)                               ``TransientJudgeError("server_error")``
other 4xx (an invalid request)                           ``JudgeUnavailable("bad_request")``
=======================================================  ===============================

A :class:`~cj_runner.errors.JudgeUnavailable` stops the batch. A parameter or form the
server refused is found by :func:`refused_parameter` first, so the judge can fall back
before an invalid request becomes fatal. ``x-should-retry: false`` makes a transient error
final for its call (``true`` makes a call-level error retryable), as the official SDKs do.
The wait a transient error carries (:func:`provider_wait`) is ``retry-after-ms``, else
``retry-after`` (seconds or an HTTP date), else the longest ``x-ratelimit-reset-*`` /
``anthropic-ratelimit-*-reset``; the retry loop caps it at ``RETRY_MAX_DELAY_S``.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cj_runner.errors import (
    FatalJudgeError,
    JudgeError,
    JudgeUnavailable,
    RateLimited,
    TransientJudgeError,
)

NowFn = Callable[[], datetime]


@dataclass(frozen=True)
class ErrorBody:
    """The machine-readable parts of an error answer (empty strings when absent)."""

    type: str = ""
    code: str = ""
    param: str = ""
    text: str = ""  # the whole body, lower-cased, for matching words


def error_body(raw: bytes | str) -> ErrorBody:
    """Read ``error.type``, ``error.code`` and ``error.param`` of an error body (OpenAI,
    Anthropic and most compatible servers nest them under ``error``)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        body: Any = json.loads(text)
    except ValueError:
        return ErrorBody(text=text.lower())
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return ErrorBody(text=text.lower())

    def field(name: str) -> str:
        value = err.get(name)
        return value if isinstance(value, str) else ""

    details = err.get("details")
    code = field("code")
    if not code and isinstance(details, dict) and isinstance(details.get("error_code"), str):
        code = str(details["error_code"])
    return ErrorBody(type=field("type"), code=code, param=field("param"), text=text.lower())


def parse_retry_after(headers: Mapping[str, str], now: NowFn | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``Retry-After`` (seconds
    or an HTTP date); ``None`` when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value_ms = float(millis)
        except ValueError:
            value_ms = float("nan")
        if value_ms == value_ms:  # not NaN
            return max(0.0, value_ms / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``) in seconds."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _reset_seconds(name: str, value: str, now: NowFn | None) -> float | None:
    if name.startswith("anthropic-"):  # RFC 3339 time of the reset
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now() if now is not None else datetime.now(UTC)
        return max(0.0, (when - current).total_seconds())
    seconds = parse_duration(value)
    if seconds is None:
        try:
            seconds = float(value)
        except ValueError:
            return None
    return max(0.0, seconds) if seconds == seconds else None


def provider_wait(headers: Mapping[str, str], now: NowFn | None = None) -> float | None:
    """The wait the provider asks for (see the module docstring); ``None`` if it said none."""
    wait = parse_retry_after(headers, now)
    if wait is not None:
        return wait
    resets = []
    for name, value in headers.items():
        low = name.lower()
        if low.startswith("x-ratelimit-reset") or (
            low.startswith("anthropic-ratelimit-") and low.endswith("-reset")
        ):
            seconds = _reset_seconds(low, value, now)
            if seconds is not None:
                resets.append(seconds)
    return max(resets) if resets else None


_QUOTA_WORDS = ("credit balance is too low", "exceeded your current quota", "insufficient_quota")
_FLAGGED_CODES = ("invalid_prompt", "content_policy_violation", "content_filter")
_FLAGGED_WORDS = ("flagged as potentially violating", "content management policy")
_TOO_LONG_WORDS = (
    "prompt is too long",
    "maximum context length",
    "context length",
    "too many tokens",
)


def classify(
    status: int,
    body: ErrorBody,
    headers: Mapping[str, str],
    message: str,
    *,
    now: NowFn | None = None,
) -> JudgeError:
    """The :class:`JudgeError` a non-2xx answer stands for (``message`` is already
    scrubbed and names the judge and the status)."""
    kind_words = f"{body.type} {body.code}"
    error: JudgeError
    if status == 401 or body.type == "authentication_error":
        error = JudgeUnavailable("auth", message)
    elif status == 403 or body.type == "permission_error":
        error = JudgeUnavailable("permission", message)
    elif (
        status == 402
        or body.type == "billing_error"
        or "insufficient_quota" in kind_words
        or any(word in body.text for word in _QUOTA_WORDS)
    ):
        error = JudgeUnavailable("quota", message)
    elif status == 404 or body.code == "model_not_found" or body.type == "not_found_error":
        error = JudgeUnavailable("model_not_found", message)
    elif 400 <= status < 500 and (
        body.code in _FLAGGED_CODES or any(word in body.text for word in _FLAGGED_WORDS)
    ):
        error = FatalJudgeError("refused", message)  # this pair's text was flagged
    elif (
        status == 413
        or body.code == "context_length_exceeded"
        or (400 <= status < 500 and any(word in body.text for word in _TOO_LONG_WORDS))
    ):
        error = FatalJudgeError("too_long", message)
    elif status == 429:
        error = RateLimited(message, retry_after=provider_wait(headers, now))
    elif status == 408:
        error = TransientJudgeError("timeout", message, retry_after=provider_wait(headers, now))
    elif status >= 500 or status == 409:
        error = TransientJudgeError(
            "server_error", message, retry_after=provider_wait(headers, now)
        )
    else:
        error = JudgeUnavailable("bad_request", message)
    should_retry = headers.get("x-should-retry", "").strip().lower()
    if should_retry == "false" and error.transient:
        error.transient = False
    elif should_retry == "true" and not error.transient and not isinstance(error, JudgeUnavailable):
        error.transient = True
    return error


#: Words by which an error answer names what it refused, per request part.
_PARAM_WORDS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "max_tokens": ("max_tokens",),
    "reasoning_effort": ("reasoning_effort", "reasoning effort"),
    "response_format": (
        "response_format",
        "response format",
        "json_schema",
        "'json_object'",
        "structured output",
        "output_config",
        "output_format",
    ),
    "tools": ("tool_choice", "tool use", "tools"),
    "thinking": ("thinking",),
}


def refused_parameter(status: int, body: ErrorBody, sent: set[str]) -> str | None:
    """Which of the request parts in ``sent`` the server refused, if the error names one.

    Only 400 and 422 answers (and a 5xx naming the structured-output form, as llama.cpp's
    server does) count; ``param`` wins over words in the body. The structured-output
    parts are checked first: "Thinking may not be enabled when tool_choice forces tool
    use" names ``tools``, and the answer is to drop the tool, not the thinking.
    """
    if not (status in (400, 422) or status >= 500):
        return None
    candidates = [
        "response_format",
        "tools",
        *[p for p in _PARAM_WORDS if p not in ("response_format", "tools")],
    ]
    if status >= 500:
        candidates = ["response_format"]
    param = body.param.lower()
    if param:
        for part in candidates:
            if part in sent and (param == part or param.startswith(part + ".")):
                return part
        if param == "max_completion_tokens" and "max_tokens" in sent:
            return "max_tokens"
    for part in candidates:
        if part in sent and any(word in body.text for word in _PARAM_WORDS[part]):
            return part
    return None
