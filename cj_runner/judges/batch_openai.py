"""The OpenAI Batch API for the OpenAI-compatible judge.

A job is a JSONL file of ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body"}`` lines uploaded with ``POST {base_url}/files`` (``purpose=batch``), then
``POST {base_url}/batches`` with ``input_file_id``, ``endpoint``, ``completion_window:
"24h"`` and ``metadata: {"cj_runner_job": job_key}``; ``GET {base_url}/batches/{id}``
reports ``status`` (``validating``, ``in_progress``, ``finalizing``, ``completed``,
``failed``, ``expired``, ``cancelling``, ``cancelled``) and ``request_counts``; answers are
read from ``GET {base_url}/files/{output_file_id}/content`` and errors from the
``error_file_id``'s (each line: ``custom_id``, ``response: {status_code, body}``,
``error: {code, message}``). A lost create request is found again by listing
``GET {base_url}/batches`` (newest first) for the job's metadata.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx

from cj_runner.judges import _http
from cj_runner.judges.batch_api import (
    JOB_KEY_METADATA,
    HTTPBatchBase,
    ItemOutcome,
    JobStatus,
    no_answer,
    parse_jsonl,
)
from cj_runner.judges.openai_compat import OpenAICompatJudge

ENDPOINT = "/v1/chat/completions"
_ENDED = ("completed", "failed", "expired", "cancelled")

#: How far back before a lost create request the listing is searched (clock skew).
_FIND_SLACK_S = 3600


class OpenAIBatchAPI(HTTPBatchBase):
    """OpenAI Batch for an :class:`OpenAICompatJudge`."""

    provider = "openai"

    def __init__(
        self, judge: OpenAICompatJudge, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(judge, transport)
        self.base = (judge.config.effective_base_url or "").partition("?")[0].rstrip("/")

    async def upload(self, job_key: str, items: list[tuple[str, dict[str, Any]]]) -> str | None:
        """Upload the job's JSONL file; its file id."""
        lines = "".join(
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body},
                ensure_ascii=False,
            )
            + "\n"
            for cid, body in items
        ).encode("utf-8")
        uploaded = await self._json(
            "POST",
            f"{self.base}/files",
            what="uploading the batch file",
            data={"purpose": "batch"},
            files={"file": (f"{job_key}.jsonl", lines, "application/jsonl")},
        )
        file_id = uploaded.get("id")
        if not isinstance(file_id, str):
            raise no_answer(self.name, "the file upload answer has no id")
        return file_id

    async def submit(
        self, job_key: str, items: list[tuple[str, dict[str, Any]]], file_id: str | None
    ) -> tuple[str, JobStatus]:
        """``POST /batches`` with the uploaded file and the job key in ``metadata``."""
        created = await self._json(
            "POST",
            f"{self.base}/batches",
            what="creating the batch job",
            json={
                "input_file_id": file_id,
                "endpoint": ENDPOINT,
                "completion_window": "24h",
                "metadata": {JOB_KEY_METADATA: job_key},
            },
        )
        job_id = created.get("id")
        if not isinstance(job_id, str):
            raise no_answer(self.name, "the batch create answer has no id")
        return job_id, _status(created)

    async def find(self, job_key: str, n_items: int, since: datetime) -> str | None:
        """The batch whose ``metadata`` carries ``job_key``, created since ``since`` (less
        an hour of slack), if any."""
        after: str | None = None
        oldest = since.timestamp() - _FIND_SLACK_S
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after is not None:
                params["after"] = after
            page = await self._json(
                "GET", f"{self.base}/batches", what="listing batch jobs", params=params
            )
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for job in data:
                metadata = job.get("metadata") or {}
                if isinstance(metadata, dict) and metadata.get(JOB_KEY_METADATA) == job_key:
                    return str(job["id"])
            created = [int(b["created_at"]) for b in data if isinstance(b.get("created_at"), int)]
            if not page.get("has_more") or not data or (created and min(created) < oldest):
                return None
            after = str(data[-1].get("id"))

    async def status(self, job_id: str) -> JobStatus:
        """``GET /batches/{id}``."""
        return _status(
            await self._json(
                "GET", f"{self.base}/batches/{job_id}", what="polling the batch job", job_id=job_id
            )
        )

    async def results(
        self, job_id: str, bodies: dict[str, dict[str, Any]]
    ) -> dict[str, ItemOutcome]:
        """Answers from the output file, errors from the error file."""
        job = await self._json(
            "GET", f"{self.base}/batches/{job_id}", what="reading the job", job_id=job_id
        )
        lines: list[dict[str, Any]] = []
        for key in ("output_file_id", "error_file_id"):
            file_id = job.get(key)
            if isinstance(file_id, str) and file_id:
                response = await self._call(
                    "GET",
                    f"{self.base}/files/{file_id}/content",
                    what="reading job results",
                    job_id=job_id,
                )
                lines.extend(parse_jsonl(response.content.decode("utf-8", "replace")))
        out: dict[str, ItemOutcome] = {}
        for line in lines:
            cid = line.get("custom_id")
            if not isinstance(cid, str) or cid not in bodies:
                continue
            answer = line.get("response")
            error = line.get("error")
            if isinstance(answer, dict) and isinstance(answer.get("status_code"), int):
                status = int(answer["status_code"])
                body = answer.get("body")
                if 200 <= status < 300:
                    out[cid] = self.item_verdict(body, bodies[cid])
                else:
                    out[cid] = self.item_error(status, body)
            elif isinstance(error, dict):
                code = str(error.get("code") or "error")
                message = _http.scrub(str(error.get("message") or code), self._secret)[:200]
                out[cid] = no_answer(self.name, f"no answer in the batch job ({code}: {message})")
        return out


def _status(job: dict[str, Any]) -> JobStatus:
    status = str(job.get("status") or "unknown")
    counts = job.get("request_counts") if isinstance(job.get("request_counts"), dict) else {}
    failure = None
    if status == "failed":
        errors_obj = job.get("errors")
        errors = errors_obj.get("data") if isinstance(errors_obj, dict) else None
        first = errors[0] if isinstance(errors, list) and errors else {}
        failure = (
            f"the batch job failed: {first.get('code', '')} {first.get('message', '')}".strip()
            if isinstance(first, dict)
            else "the batch job failed"
        )
    return JobStatus(
        status=status,
        ended=status in _ENDED,
        counts={k: int(v) for k, v in (counts or {}).items() if isinstance(v, int)},
        failure=failure,
    )
