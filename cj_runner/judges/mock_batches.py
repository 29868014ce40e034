"""The served mock's provider batch APIs: OpenAI Batch and Anthropic Message Batches.

Routes (answered by :class:`BatchDesk`, owned by a
:class:`~cj_runner.judges.server.MockJudgeServer`):

* OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``, a JSONL file of
  ``{custom_id, method, url, body}`` lines), ``GET /v1/files``, ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``; ``POST /v1/batches`` (``input_file_id``, ``endpoint``,
  ``completion_window``, ``metadata``), ``GET /v1/batches`` (newest first, ``after``,
  ``limit``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.
* Anthropic: ``POST /v1/messages/batches`` (``requests: [{custom_id, params}]``),
  ``GET /v1/messages/batches`` (newest first, ``after_id``, ``limit``),
  ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results`` (JSONL),
  ``POST /v1/messages/batches/{id}/cancel``.

A job is answered request by request exactly as the synchronous endpoints would answer
(:meth:`~cj_runner.judges.server.MockJudgeServer.reply_for`), in the order of its
requests, when it ends. When it ends is driven by status polls, never by wall time: a job
answers ``in_progress`` to its first ``polls_to_end`` status requests (the profile's
``server.batch.polls_to_end``), then ends on the next one, unless the desk's
:attr:`BatchDesk.gate` is closed (tests close it to keep jobs running until they release
it). A share ``server.batch.expire`` of the requests (a seeded draw per ``custom_id``)
ends expired instead of answered (OpenAI: ``batch_expired`` lines in the error file and a
job status ``expired``; Anthropic: ``expired`` results). Drawn judge errors become
per-request errors (OpenAI: the error file with the status and body; Anthropic:
``errored`` results).

Tests meet the desk at explicit rendezvous points (:class:`Hold`): a request to create a
job can be held before the job exists (and then dropped: as if the process died before
the submission arrived) or after it exists (the answer is held: the process dies before
it learns the job id).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Literal

from cj_runner.judges import mock_dialects as dialects

if TYPE_CHECKING:
    from cj_runner.judges.server import MockJudgeServer

BatchApi = Literal["openai", "anthropic"]

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


class BatchDesk:
    """The batch endpoints' state and answers (thread-safe)."""

    def __init__(self, server: MockJudgeServer) -> None:
        self.server = server
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, MockJob] = {}
        self.created: list[str] = []  # job ids in creation order
        self.holds: list[Hold] = []
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

    # ------------------------------------------------------------ routing

    def handles(self, path: str) -> bool:
        """Whether ``path`` is a batch or file route."""
        return (
            path == "/v1/files"
            or path.startswith("/v1/files/")
            or path == "/v1/batches"
            or path.startswith("/v1/batches/")
            or path == "/v1/messages/batches"
            or path.startswith("/v1/messages/batches/")
        )

    def route(
        self, method: str, path: str, query: str, headers: dict[str, str], raw: bytes, host: str
    ) -> tuple[int, bytes, str] | None:
        """The answer ``(status, body, content type)`` to one request; ``None``: close the
        connection without an answer."""
        api: BatchApi = "anthropic" if path.startswith("/v1/messages/") else "openai"
        params = dict(urllib.parse.parse_qsl(query))
        parts = path.strip("/").split("/")
        try:
            if api == "openai" and parts[1] == "files":
                return self._files(method, parts[2:], headers, raw)
            if api == "openai":
                return self._openai_batches(method, parts[2:], params, raw)
            return self._anthropic_batches(method, parts[3:], params, raw, host)
        except _NotFound as exc:
            return self._error(api, 404, str(exc), "not_found_error")
        except _Invalid as exc:
            return self._error(api, 400, str(exc), "invalid_request_error")

    def _error(self, api: BatchApi, status: int, message: str, kind: str) -> tuple[int, bytes, str]:
        name = "bad_request"
        reply = dialects.error_reply(api, name, message=message, status=status)
        return status, json.dumps(reply.body).encode(), "application/json"

    @staticmethod
    def _json(obj: Any, status: int = 200) -> tuple[int, bytes, str]:
        return status, json.dumps(obj).encode("utf-8"), "application/json"

    # ------------------------------------------------------------ OpenAI files

    def _files(
        self, method: str, rest: list[str], headers: dict[str, str], raw: bytes
    ) -> tuple[int, bytes, str]:
        if method == "POST" and not rest:
            fields = _multipart(headers.get("content-type", ""), raw)
            if "file" not in fields or "purpose" not in fields:
                raise _Invalid("'file' and 'purpose' are required")
            content, filename = fields["file"]
            with self._lock:
                file_id = self._new_id("file-")
                self.files[file_id] = {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": int(time.time()),
                    "filename": filename or "upload.jsonl",
                    "purpose": fields["purpose"][0].decode("utf-8"),
                    "status": "processed",
                    "status_details": None,
                    "_content": content,
                }
            return self._json(self._file_object(file_id))
        if method == "GET" and not rest:
            with self._lock:
                data = [self._file_object(f) for f in reversed(list(self.files))]
            return self._json({"object": "list", "data": data, "has_more": False})
        if method == "GET" and rest:
            with self._lock:
                if rest[0] not in self.files:
                    raise _NotFound(f"No such File object: {rest[0]}")
                if len(rest) == 2 and rest[1] == "content":
                    return 200, self.files[rest[0]]["_content"], "application/octet-stream"
                return self._json(self._file_object(rest[0]))
        raise _NotFound("no such route")

    def _file_object(self, file_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.files[file_id].items() if not k.startswith("_")}

    def _store_file(self, filename: str, lines: list[dict[str, Any]]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")
        file_id = self._new_id("file-")
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": "batch_output",
            "status": "processed",
            "status_details": None,
            "_content": content,
        }
        return file_id

    # ------------------------------------------------------------ OpenAI batches

    def _openai_batches(
        self, method: str, rest: list[str], params: dict[str, str], raw: bytes
    ) -> tuple[int, bytes, str] | None:
        if method == "POST" and not rest:
            body = _json_body(raw)
            for key in ("input_file_id", "endpoint", "completion_window"):
                if not isinstance(body.get(key), str):
                    raise _Invalid(f"'{key}' is required")
            if body["completion_window"] != "24h":
                raise _Invalid("completion_window must be '24h'")
            if self._wait_at("before_create") == "drop":
                return None
            job = self._create_openai(body)
            if self._wait_at("after_create") == "drop":
                return None
            return self._json(self._openai_object(job))
        if method == "GET" and not rest:
            return self._json(self._listing("openai", params, "after"))
        job = self._job(rest[0], "openai")
        if method == "GET" and len(rest) == 1:
            if self._wait_at("poll") == "drop":
                return None
            self._poll(job)
            return self._json(self._openai_object(job))
        if method == "POST" and rest[1:] == ["cancel"]:
            self._cancel(job)
            return self._json(self._openai_object(job))
        raise _NotFound("no such route")

    def _create_openai(self, body: dict[str, Any]) -> MockJob:
        with self._lock:
            file = self.files.get(body["input_file_id"])
            if file is None:
                raise _NotFound(f"No such File object: {body['input_file_id']}")
            requests: list[tuple[str, dict[str, Any]]] = []
            errors: list[dict[str, Any]] = []
            seen: set[str] = set()
            for number, line in enumerate(file["_content"].decode("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    errors.append({"code": "invalid_json_line", "line": number, "message": ""})
                    continue
                custom_id = item.get("custom_id") if isinstance(item, dict) else None
                if not isinstance(custom_id, str) or custom_id in seen:
                    errors.append(
                        {"code": "duplicate_custom_id", "line": number, "message": str(custom_id)}
                    )
                    continue
                if item.get("url") != body["endpoint"] or item.get("method") != "POST":
                    errors.append({"code": "mismatched_endpoint", "line": number, "message": ""})
                    continue
                seen.add(custom_id)
                requests.append((custom_id, item.get("body") or {}))
            job = MockJob(
                id=self._new_id("batch_"),
                api="openai",
                created_at=int(time.time()),
                requests=requests,
                metadata=body.get("metadata"),
                input_file_id=body["input_file_id"],
                endpoint=body["endpoint"],
                failed=[{**e, "param": None} for e in errors] or None,
            )
            self.jobs[job.id] = job
            self.created.append(job.id)
        return job

    def _openai_object(self, job: MockJob) -> dict[str, Any]:
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

    # ------------------------------------------------------------ Anthropic

    def _anthropic_batches(
        self, method: str, rest: list[str], params: dict[str, str], raw: bytes, host: str
    ) -> tuple[int, bytes, str] | None:
        if method == "POST" and not rest:
            body = _json_body(raw)
            requests = body.get("requests")
            if not isinstance(requests, list) or not requests:
                raise _Invalid("requests: Field required")
            parsed: list[tuple[str, dict[str, Any]]] = []
            for index, item in enumerate(requests):
                custom_id = item.get("custom_id") if isinstance(item, dict) else None
                params_ = item.get("params") if isinstance(item, dict) else None
                if not isinstance(custom_id, str) or not isinstance(params_, dict):
                    raise _Invalid(f"requests.{index}: custom_id and params are required")
                if not all(c.isalnum() or c in "_-" for c in custom_id) or len(custom_id) > 64:
                    raise _Invalid(
                        f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
                    )
                if any(custom_id == c for c, _ in parsed):
                    raise _Invalid(f"requests.{index}.custom_id: duplicate {custom_id}")
                for key in ("model", "max_tokens", "messages"):
                    if key not in params_:
                        raise _Invalid(f"requests.{index}.params.{key}: Field required")
                parsed.append((custom_id, params_))
            if self._wait_at("before_create") == "drop":
                return None
            with self._lock:
                job = MockJob(
                    id=self._new_id("msgbatch_"),
                    api="anthropic",
                    created_at=int(time.time()),
                    requests=parsed,
                )
                self.jobs[job.id] = job
                self.created.append(job.id)
            if self._wait_at("after_create") == "drop":
                return None
            return self._json(self._anthropic_object(job, host))
        if method == "GET" and not rest:
            return self._json(self._listing("anthropic", params, "after_id", host))
        job = self._job(rest[0], "anthropic")
        if method == "GET" and len(rest) == 1:
            if self._wait_at("poll") == "drop":
                return None
            self._poll(job)
            return self._json(self._anthropic_object(job, host))
        if method == "GET" and rest[1:] == ["results"]:
            if job.results is None:
                raise _Invalid(f"Message Batch {job.id} has not yet ended processing.")
            lines = [
                {"custom_id": custom_id, "result": result}
                for (custom_id, _), (_, result) in zip(job.requests, job.results, strict=True)
            ]
            text = "".join(json.dumps(line) + "\n" for line in lines)
            return 200, text.encode("utf-8"), "application/binary"
        if method == "POST" and rest[1:] == ["cancel"]:
            self._cancel(job)
            return self._json(self._anthropic_object(job, host))
        raise _NotFound("no such route")

    def _anthropic_object(self, job: MockJob, host: str) -> dict[str, Any]:
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
            "results_url": (
                f"http://{host}/v1/messages/batches/{job.id}/results" if ended else None
            ),
        }

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
            self._openai_object(self.jobs[i])
            if api == "openai"
            else self._anthropic_object(self.jobs[i], host)
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
            results.append(self._result(job, custom_id, number, reply))
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

    @staticmethod
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
