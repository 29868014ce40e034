"""The Anthropic Message Batches API for the Anthropic judge.

``POST {root}/v1/messages/batches`` with ``requests: [{custom_id, params}]`` (``params``:
the Messages body the judge would POST); ``GET {root}/v1/messages/batches/{id}`` reports
``processing_status`` (``in_progress``, ``canceling``, ``ended``) and ``request_counts``;
once ended, ``results_url`` (``GET .../{id}/results``) is a JSONL file of
``{custom_id, result: {type: succeeded|errored|canceled|expired, ...}}``.

Message Batches carry no metadata, so a create request whose answer was lost is found
again by listing ``GET {root}/v1/messages/batches`` (newest first): a job created since
the request may have left (less a few minutes of clock slack) with the same number of
requests. The choice is checked when its results arrive: answers whose ``custom_id`` is
not one of the job's are never read, and requests left without an answer are asked again
(see docs/decisions.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.batch_api import (
    HTTPBatchBase,
    ItemOutcome,
    JobStatus,
    no_answer,
    parse_jsonl,
)

#: Error ``type`` of an errored request -> the HTTP status it stands for.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}

_FIND_SLACK_S = 600


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class AnthropicBatchAPI(HTTPBatchBase):
    """Message Batches for an :class:`AnthropicJudge`."""

    provider = "anthropic"

    def __init__(
        self, judge: AnthropicJudge, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(judge, transport)
        root, _, self.query = judge.url.partition("?")
        self.root = root.removesuffix("/messages") + "/messages/batches"

    def _url(self, path: str = "") -> str:
        return self.root + path + (f"?{self.query}" if self.query else "")

    async def upload(self, job_key: str, items: list[tuple[str, dict[str, Any]]]) -> str | None:
        """Nothing to upload: the requests go with the create request."""
        return None

    async def submit(
        self, job_key: str, items: list[tuple[str, dict[str, Any]]], file_id: str | None
    ) -> tuple[str, JobStatus]:
        """``POST /v1/messages/batches``."""
        created = await self._json(
            "POST",
            self._url(),
            what="creating the message batch",
            json={"requests": [{"custom_id": cid, "params": body} for cid, body in items]},
        )
        job_id = created.get("id")
        if not isinstance(job_id, str):
            raise no_answer(self.name, "the batch create answer has no id")
        return job_id, _status(created)

    async def find(self, job_key: str, n_items: int, since: datetime) -> str | None:
        """The oldest batch of ``n_items`` requests created since ``since`` (less a few
        minutes of slack), if any."""
        oldest = since.timestamp() - _FIND_SLACK_S
        after: str | None = None
        candidates: list[tuple[float, str]] = []
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after is not None:
                params["after_id"] = after
            page = await self._json(
                "GET", self._url(), what="listing message batches", params=params
            )
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            stop = False
            for job in data:
                created = _parse_time(job.get("created_at"))
                if created is None or created < oldest:
                    stop = True
                    continue
                counts = job.get("request_counts")
                total = (
                    sum(v for v in counts.values() if isinstance(v, int))
                    if isinstance(counts, dict)
                    else -1
                )
                if total == n_items:
                    candidates.append((created, str(job["id"])))
            if stop or not page.get("has_more") or not data:
                break
            after = str(page.get("last_id") or data[-1].get("id"))
        return min(candidates)[1] if candidates else None

    async def status(self, job_id: str) -> JobStatus:
        """``GET /v1/messages/batches/{id}``."""
        return _status(
            await self._json(
                "GET", self._url(f"/{job_id}"), what="polling the batch", job_id=job_id
            )
        )

    async def results(
        self, job_id: str, bodies: dict[str, dict[str, Any]]
    ) -> dict[str, ItemOutcome]:
        """The results file (JSONL), request by request."""
        job = await self._json(
            "GET", self._url(f"/{job_id}"), what="reading the batch", job_id=job_id
        )
        url = job.get("results_url")
        if not isinstance(url, str) or not url:
            return {}
        response = await self._call("GET", url, what="reading batch results", job_id=job_id)
        out: dict[str, ItemOutcome] = {}
        for line in parse_jsonl(response.content.decode("utf-8", "replace")):
            cid = line.get("custom_id")
            result = line.get("result")
            if not isinstance(cid, str) or cid not in bodies or not isinstance(result, dict):
                continue  # not one of this job's requests: never read
            kind = result.get("type")
            if kind == "succeeded":
                out[cid] = self.item_verdict(result.get("message"), bodies[cid])
            elif kind == "errored":
                error = result.get("error")
                inner = error.get("error") if isinstance(error, dict) else None
                err_type = inner.get("type") if isinstance(inner, dict) else None
                status = _STATUS_OF_TYPE.get(str(err_type), 500)
                out[cid] = self.item_error(status, error)
            else:
                out[cid] = no_answer(self.name, f"no answer in the message batch ({kind})")
        return out


def _status(job: dict[str, Any]) -> JobStatus:
    status = str(job.get("processing_status") or "unknown")
    counts = job.get("request_counts") if isinstance(job.get("request_counts"), dict) else {}
    return JobStatus(
        status=status,
        ended=status == "ended",
        counts={k: int(v) for k, v in (counts or {}).items() if isinstance(v, int)},
    )
