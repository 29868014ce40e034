"""The exception tree of cj-runner.

Every error the runner raises on purpose derives from :class:`CJError`::

    CJError
    ├── UserError            expected, caused by the user's input; printed as one line, exit 2
    │   ├── ConfigError      unknown/out-of-range setting, unknown or malformed profile
    │   ├── InputError       bad inventory, manifest, essay file, grade, anchor
    │   └── NotFoundError    a batch/assignment named on the command line does not exist
    ├── StorageError         the database could not be opened, migrated or written
    ├── BatchLockedError     another live process runs the same batch (exit 2)
    └── JudgeError           one judge call failed; ``kind`` names what happened
        ├── RateLimited      HTTP 429; ``retry_after`` seconds when the server said so
        ├── TransientJudgeError  timeout, 5xx, dropped connection, malformed answer:
        │                        worth retrying (a malformed answer that survives every
        │                        retry is stored as the comparison's permanent error)
        └── FatalJudgeError  refusal, auth or request error: not retried

The CLI catches :class:`UserError` and prints ``error: <message>`` without a traceback.
"""

from __future__ import annotations


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


class JudgeError(CJError):
    """A judge call failed.

    Attributes:
        kind: short machine-readable name (``timeout``, ``rate_limit``, ``server_error``,
            ``connection``, ``malformed``, ``refused``, ``auth``, ``bad_request``).
        transient: whether retrying the same call may succeed.
    """

    transient: bool = False

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message or kind


class TransientJudgeError(JudgeError):
    """Timeout, 5xx, dropped connection: retrying may succeed."""

    transient = True


class RateLimited(TransientJudgeError):
    """HTTP 429; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__("rate_limit", message or "rate limited (429)")
        self.retry_after = retry_after


class FatalJudgeError(JudgeError):
    """Refusal, malformed answer, auth or request error: not retried further."""

    transient = False
