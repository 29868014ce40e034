"""The served mock's Anthropic Message Batches routes."""

from __future__ import annotations

import json
import time
from typing import Any

from cj_runner.judges.mock_batches_desk import _DeskState, _Invalid, _json_body, _NotFound
from cj_runner.judges.mock_batches_jobs import MockJob, _anthropic_object


class _AnthropicDesk(_DeskState):
    """``/v1/messages/batches``."""

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
            return self._json(_anthropic_object(job, host))
        if method == "GET" and not rest:
            return self._json(self._listing("anthropic", params, "after_id", host))
        job = self._job(rest[0], "anthropic")
        if method == "GET" and len(rest) == 1:
            if self._wait_at("poll") == "drop":
                return None
            self._poll(job)
            return self._json(_anthropic_object(job, host))
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
            return self._json(_anthropic_object(job, host))
        raise _NotFound("no such route")
