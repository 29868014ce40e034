"""The served mock's provider batch jobs, and how a job looks on each API's wire.

A :class:`MockJob` is rendered as an OpenAI ``batch`` object (:func:`_openai_object`) or an
Anthropic ``message_batch`` (:func:`_anthropic_object`); :func:`_result` turns one judge
reply into the result line of its request. See :mod:`cj_runner.judges.mock_batches`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cj_runner.judges import mock_dialects as dialects

BatchApi = Literal["openai", "anthropic"]

#: The errors the batch endpoints answer (``mock_dialects``' names; see the table there).
BatchError = Literal[
    "auth",
    "permission",
    "quota",
    "rate_limit",
    "overloaded",
    "server_error",
    "not_found",
    "bad_request",
]

#: What a held request does once released: ``answer`` it, or ``drop`` it (close the
#: connection without creating anything, as if it never arrived).
HoldAction = Literal["answer", "drop"]

_COMPLETION_WINDOW_S = 24 * 3600


@dataclass
class Hold:
    """A rendezvous: requests reaching ``point`` wait until :meth:`release`;
    :attr:`arrived` is set when the first one does."""

    point: Literal["before_create", "after_create", "poll"]
    action: HoldAction = "answer"
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self, action: HoldAction | None = None) -> None:
        """Let the held requests go on (``action`` overrides what they do)."""
        if action is not None:
            self.action = action
        self.released.set()


@dataclass
class MockJob:
    """One provider job on the mock."""

    id: str
    api: BatchApi
    created_at: int
    requests: list[tuple[str, dict[str, Any]]]
    metadata: dict[str, str] | None = None
    input_file_id: str | None = None
    endpoint: str = "/v1/chat/completions"
    polls: int = 0
    ended_at: int | None = None
    cancelled: bool = False
    failed: list[dict[str, Any]] | None = None
    #: per request: ("succeeded", body) | ("errored", status, body) | ("expired",) | ...
    results: list[tuple[str, dict[str, Any]]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


def _iso(stamp: int | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _openai_object(job: MockJob) -> dict[str, Any]:
    total = len(job.requests)
    if job.failed:
        status = "failed"
    elif job.cancelled:
        status = "cancelled"
    elif job.results is None:
        status = "validating" if job.polls == 0 else "in_progress"
    elif any(kind == "expired" for kind, _ in job.results):
        status = "expired"
    else:
        status = "completed"
    done = job.results or []
    completed = sum(1 for kind, _ in done if kind == "succeeded")
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint,
        "errors": {"object": "list", "data": job.failed} if job.failed else None,
        "input_file_id": job.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "created_at": job.created_at,
        "in_progress_at": job.created_at if job.polls else None,
        "expires_at": job.created_at + _COMPLETION_WINDOW_S,
        "finalizing_at": job.ended_at,
        "completed_at": job.ended_at if status == "completed" else None,
        "failed_at": job.created_at if status == "failed" else None,
        "expired_at": job.ended_at if status == "expired" else None,
        "cancelling_at": job.ended_at if job.cancelled else None,
        "cancelled_at": job.ended_at if job.cancelled else None,
        "request_counts": {
            "total": total,
            "completed": completed,
            "failed": len(done) - completed,
        },
        "metadata": job.metadata,
    }


def _anthropic_object(job: MockJob, host: str) -> dict[str, Any]:
    ended = job.results is not None
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if not ended:
        counts["processing"] = len(job.requests)
    else:
        for kind, _ in job.results or []:
            counts[kind] += 1
    return {
        "id": job.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else "in_progress",
        "request_counts": counts,
        "ended_at": _iso(job.ended_at),
        "created_at": _iso(job.created_at),
        "expires_at": _iso(job.created_at + _COMPLETION_WINDOW_S),
        "archived_at": None,
        "cancel_initiated_at": _iso(job.ended_at) if job.cancelled else None,
        "results_url": (f"http://{host}/v1/messages/batches/{job.id}/results" if ended else None),
    }


def _result(
    job: MockJob, custom_id: str, number: int, reply: dialects.Reply
) -> tuple[str, dict[str, Any]]:
    ok = 200 <= reply.status < 300
    if job.api == "anthropic":
        if ok:
            return "succeeded", {"type": "succeeded", "message": reply.body}
        return "errored", {"type": "errored", "error": reply.body}
    line = {
        "id": f"batch_req_{job.id}_{number}",
        "custom_id": custom_id,
        "response": {
            "status_code": reply.status,
            "request_id": f"req_{job.id}_{number}",
            "body": reply.body,
        },
        "error": None,
    }
    return ("succeeded" if ok else "errored"), line


def _openai_error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
