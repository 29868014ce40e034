"""The state of the served mock's batch desk: jobs, files, holds, and a job's life cycle.

:class:`_DeskState` is the part of :class:`~cj_runner.judges.mock_batches.BatchDesk` both
APIs share: the test controls (holds, the gate), ids, stored files, listings, and a job's
end (answered by polls, cancelled, expired). The API routes build on it in
``mock_batches_openai`` and ``mock_batches_anthropic``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Literal

from cj_runner.judges import mock_dialects as dialects
from cj_runner.judges.mock_batches_jobs import (
    BatchApi,
    BatchError,
    Hold,
    HoldAction,
    MockJob,
    _anthropic_object,
    _openai_error_line,
    _openai_object,
    _result,
)

if TYPE_CHECKING:
    from cj_runner.judges.server import MockJudgeServer


class _DeskState:
    """The batch endpoints' shared state and a job's life cycle (thread-safe)."""

    def __init__(self, server: MockJudgeServer) -> None:
        self.server = server
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, MockJob] = {}
        self.created: list[str] = []  # job ids in creation order
        self.holds: list[Hold] = []
        #: errors the next batch requests get (test control: :meth:`refuse`)
        self.refusals: list[tuple[BatchError, float | None]] = []
        #: closed: jobs stay in progress whatever the polls (tests release it)
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ test controls

    def hold(self, point: Literal["before_create", "after_create", "poll"], **kw: Any) -> Hold:
        """Hold the next requests reaching ``point`` until the returned hold is released."""
        hold = Hold(point, **kw)
        with self._lock:
            self.holds.append(hold)
        return hold

    def _wait_at(self, point: str) -> HoldAction:
        with self._lock:
            hold = next((h for h in self.holds if h.point == point), None)
        if hold is None:
            return "answer"
        hold.arrived.set()
        while not hold.released.wait(0.05):
            if self.server._stopping.is_set():
                return "drop"
        with self._lock:
            if hold in self.holds:
                self.holds.remove(hold)
        return hold.action

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}mock"

    def refuse(
        self, kind: BatchError, *, times: int = 1, retry_after_s: float | None = None
    ) -> None:
        """Answer the next ``times`` batch requests (any endpoint) with the error ``kind``,
        in the provider's own words (``retry_after_s``: the wait a ``rate_limit`` or
        ``overloaded`` answer asks for)."""
        with self._lock:
            self.refusals.extend([(kind, retry_after_s)] * times)

    def take_refusal(self, api: BatchApi) -> dialects.Reply | None:
        """The error the next batch request gets (:meth:`refuse`), if any."""
        with self._lock:
            if not self.refusals:
                return None
            kind, retry_after_s = self.refusals.pop(0)
        return dialects.error_reply(api, kind, retry_after_s=retry_after_s)

    def _error(self, api: BatchApi, kind: BatchError, message: str) -> tuple[int, bytes, str]:
        """The provider's answer for the error ``kind`` (``mock_dialects``' names: e.g.
        ``not_found`` is OpenAI's 404 ``invalid_request_error``, Anthropic's 404
        ``not_found_error``)."""
        reply = dialects.error_reply(api, kind, message=message)
        return reply.status, json.dumps(reply.body).encode(), "application/json"

    @staticmethod
    def _json(obj: Any, status: int = 200) -> tuple[int, bytes, str]:
        return status, json.dumps(obj).encode("utf-8"), "application/json"

    def _store_file(self, filename: str, lines: list[dict[str, Any]]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")
        return self._new_file(content, filename, "batch_output")

    def _new_file(self, content: bytes, filename: str, purpose: str) -> str:
        """Store a file as OpenAI's files endpoint describes it; its id (the caller holds
        the lock)."""
        file_id = self._new_id("file-")
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "_content": content,
        }
        return file_id

    # ------------------------------------------------------------ shared

    def _job(self, job_id: str, api: BatchApi) -> MockJob:
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None or job.api != api:
            raise _NotFound(f"No such batch: {job_id}")
        return job

    def _listing(
        self, api: BatchApi, params: dict[str, str], cursor: str, host: str = ""
    ) -> dict[str, Any]:
        with self._lock:
            ids = [i for i in reversed(self.created) if self.jobs[i].api == api]
        after = params.get(cursor)
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        limit = max(1, min(int(params.get("limit") or 20), 100))
        page, more = ids[:limit], len(ids) > limit
        objects = [
            _openai_object(self.jobs[i])
            if api == "openai"
            else _anthropic_object(self.jobs[i], host)
            for i in page
        ]
        listing: dict[str, Any] = {
            "data": objects,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
            "has_more": more,
        }
        if api == "openai":
            listing["object"] = "list"
        return listing

    def _poll(self, job: MockJob) -> None:
        """A status request: counts towards the job's end (see the module docstring)."""
        with self._lock:
            job.polls += 1
            if job.results is not None or job.failed or job.cancelled:
                return
            due = job.polls > self.server.config.server.batch.polls_to_end
            if not (due and self.gate.is_set()):
                return
        self._end(job)

    def _cancel(self, job: MockJob) -> None:
        with self._lock:
            if job.results is not None:
                return
            job.cancelled = True
            job.results = [
                ("canceled", {"type": "canceled"})
                if job.api == "anthropic"
                else ("expired", _openai_error_line(custom_id, "batch_cancelled", "cancelled"))
                for custom_id, _ in job.requests
            ]
            job.ended_at = int(time.time())

    def _end(self, job: MockJob) -> None:
        """Answer every request of ``job`` (in order) and end it."""
        server = self.server
        expire = server.config.server.batch.expire
        results: list[tuple[str, dict[str, Any]]] = []
        for number, (custom_id, body) in enumerate(job.requests, 1):
            draw = random.Random(
                hashlib.sha256(f"{server.config.seed}:{custom_id}".encode()).hexdigest()
            ).random()
            if draw < expire:
                if job.api == "anthropic":
                    results.append(("expired", {"type": "expired"}))
                else:
                    results.append(
                        (
                            "expired",
                            _openai_error_line(
                                custom_id,
                                "batch_expired",
                                "This request could not be executed before the completion "
                                "window expired.",
                            ),
                        )
                    )
                continue
            reply = server.reply_for(job.api, body, server._next_serial())
            results.append(_result(job, custom_id, number, reply))
        with self._lock:
            job.results = results
            job.ended_at = int(time.time())
            if job.api == "openai":
                output = [line for kind, line in results if kind == "succeeded"]
                errors = [line for kind, line in results if kind != "succeeded"]
                if output:
                    job.output_file_id = self._store_file(f"{job.id}_output.jsonl", output)
                if errors:
                    job.error_file_id = self._store_file(f"{job.id}_error.jsonl", errors)


class _NotFound(Exception):
    pass


class _Invalid(Exception):
    pass


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _Invalid("the request body must be a JSON object")
    return body


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str | None]]:
    """The fields of a ``multipart/form-data`` body: name -> (bytes, file name)."""
    if not content_type.startswith("multipart/form-data"):
        raise _Invalid("expected multipart/form-data")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    fields: dict[str, tuple[bytes, str | None]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        fields[name] = (payload if isinstance(payload, bytes) else b"", part.get_filename())
    return fields
