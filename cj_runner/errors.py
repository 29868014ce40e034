"""The exception tree of cj-runner.

Every error the runner raises on purpose derives from :class:`CJError`::

    CJError
    ├── UserError            expected, caused by the user's input; printed as one line, exit 2
    │   ├── ConfigError      unknown/out-of-range setting, unknown or malformed profile
    │   ├── InputError       bad inventory, manifest, essay file, grade, anchor
    │   └── NotFoundError    a batch/assignment named on the command line does not exist
    ├── StorageError         the database could not be opened, migrated or written
    ├── ScoringError         a fit failed at a wave end or in finalization: the batch is
    │                        marked FAILED (stop reason ``scoring_error``), exit 1
    ├── BatchLockedError     another live process runs the same batch (exit 2)
    └── JudgeError           one judge call failed; ``kind`` names what happened, ``usage``
        │                    holds the tokens the provider billed for it (if any) and
        │                    ``retry_after`` the wait the provider asked for (if any)
        ├── TransientJudgeError  timeout, 5xx, dropped connection, malformed or truncated
        │   │                    answer: worth retrying (a malformed answer that survives
        │   │                    every retry is stored as the comparison's permanent error)
        │   ├── RateLimited      HTTP 429 (not a quota error)
        │   └── RequestRefused   the server refused a request form or parameter (kind
        │                        ``unsupported``); the judge switched to the next form, so
        │                        the same comparison is asked again at once
        └── FatalJudgeError  refusal, or a request error of this one call: not retried
            └── JudgeUnavailable  no call can succeed (bad key, no permission, no quota
                                  or credit, unknown model, an invalid request with no
                                  fallback): the batch stops sending at once

The CLI catches :class:`UserError` and prints ``error: <message>`` without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class CJError(Exception):
    """Base of every error raised on purpose by cj-runner."""

    exit_code: int = 1


class UserError(CJError):
    """An expected error caused by the user's input; shown as one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A setting, profile, grade scale or judge profile is unknown or invalid."""


class InputError(UserError):
    """An inventory, manifest or essay file is invalid."""


class NotFoundError(UserError):
    """A batch, assignment or other named object does not exist in the database."""


class BatchLockedError(UserError):
    """Another live process is already running this batch."""


class StorageError(CJError):
    """The database could not be opened, migrated or written."""


class ScoringError(CJError):
    """Scoring failed (at a wave end or in finalization); the batch was marked FAILED with
    the reason stored, so it never stays RUNNING."""

    exit_code = 1


class JudgeError(CJError):
    """A judge call failed.

    Attributes:
        kind: short machine-readable name (``timeout``, ``rate_limit``, ``server_error``,
            ``connection``, ``malformed``, ``truncated``, ``unsupported``, ``refused``,
            ``too_long``, ``auth``, ``permission``, ``quota``, ``model_not_found``,
            ``bad_request``, ``unknown_job``: a 404 about a stored provider batch job).
        transient: whether retrying the same call may succeed.
        request_id: the provider's id for the request that failed, when it gave one
            (for the per-call log and a support ticket).
    """

    transient: bool = False
    request_id: str | None = None

    def __init__(
        self,
        kind: str,
        message: str = "",
        *,
        usage: TokenUsage | None = None,
        retry_after: float | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message or kind
        self.usage = usage
        self.retry_after = retry_after
        if transient is not None:  # the server said whether to retry (``x-should-retry``)
            self.transient = transient


class TransientJudgeError(JudgeError):
    """Timeout, 5xx, dropped connection: retrying may succeed."""

    transient = True


class RateLimited(TransientJudgeError):
    """HTTP 429; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(
        self,
        message: str = "",
        retry_after: float | None = None,
        *,
        usage: TokenUsage | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(
            "rate_limit",
            message or "rate limited (429)",
            usage=usage,
            retry_after=retry_after,
            transient=transient,
        )


class RequestRefused(TransientJudgeError):
    """The server refused a request form or parameter; the judge now uses the next one."""

    def __init__(self, message: str, *, usage: TokenUsage | None = None) -> None:
        super().__init__("unsupported", message, usage=usage)


class FatalJudgeError(JudgeError):
    """Refusal, or a request error of this one call: not retried further."""

    transient = False


class JudgeUnavailable(FatalJudgeError):
    """No call of the batch can succeed (auth, permission, quota, unknown model...)."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens the provider reported for one call.

    ``tokens_in`` counts every input token, ``tokens_cached`` the part of them read from
    the provider's prompt cache (billed at the cached price where the profile gives one).
    """

    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
