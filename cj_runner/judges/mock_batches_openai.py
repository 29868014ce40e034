"""The served mock's OpenAI Batch routes: files (upload, list, content) and batches."""

from __future__ import annotations

import json
import time
from typing import Any

from cj_runner.judges.mock_batches_desk import (
    _DeskState,
    _Invalid,
    _json_body,
    _multipart,
    _NotFound,
)
from cj_runner.judges.mock_batches_jobs import MockJob, _openai_object


class _OpenAIDesk(_DeskState):
    """``/v1/files`` and ``/v1/batches``."""

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
                file_id = self._new_file(
                    content, filename or "upload.jsonl", fields["purpose"][0].decode("utf-8")
                )
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
            return self._json(_openai_object(job))
        if method == "GET" and not rest:
            return self._json(self._listing("openai", params, "after"))
        job = self._job(rest[0], "openai")
        if method == "GET" and len(rest) == 1:
            if self._wait_at("poll") == "drop":
                return None
            self._poll(job)
            return self._json(_openai_object(job))
        if method == "POST" and rest[1:] == ["cancel"]:
            self._cancel(job)
            return self._json(_openai_object(job))
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
