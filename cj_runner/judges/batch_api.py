"""Provider batch APIs (OpenAI Batch, Anthropic Message Batches): what the batch-API mode
needs from a provider, whichever it is.

A :class:`BatchAPI` turns judge requests into a job's request bodies (what the judge would
POST synchronously), uploads and submits a job under a ``job_key`` the runner chose, finds
a job by that key (a submission whose answer never arrived), polls its status and reads
its answers back as one :class:`~cj_runner.judges.base.Verdict` or
:class:`~cj_runner.errors.JudgeError` per ``custom_id``, classified as the synchronous judge
classifies them. None of these calls is a judge call: they are not counted against the
batch's budget (the requests inside a job are).

Errors of the batch endpoints themselves are raised as :class:`JudgeError` (transient:
the caller asks again later; :class:`~cj_runner.errors.JudgeUnavailable`: stop; a 404 about
a job is :data:`UNKNOWN_JOB`, which the caller asks again a few times before it stops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from cj_runner.errors import JudgeError, JudgeUnavailable, TransientJudgeError
from cj_runner.judges import _http
from cj_runner.judges.base import JudgeRequest, Verdict
from cj_runner.judges.provider_errors import classify, error_body

#: The most bytes of a results file read (a job of 50,000 answers fits).
MAX_RESULTS_BYTES = 512 * 1024 * 1024

#: The deadline of one batch-endpoint call (uploads and result files are large).
MIN_TIMEOUT_S = 300.0

#: The ``metadata`` key (OpenAI) under which a job carries its ``job_key``.
JOB_KEY_METADATA = "cj_runner_job"

ItemOutcome = Verdict | JudgeError

#: The error kind of a 404 at a job's status or results endpoint: the provider does not
#: know the job (providers are reported to answer so for a short while after creating one).
UNKNOWN_JOB = "unknown_job"


@dataclass(frozen=True)
class JobStatus:
    """A job's state at the provider."""

    status: str
    ended: bool
    counts: dict[str, int] = field(default_factory=dict)
    #: set when the whole job failed (e.g. its input file was refused)
    failure: str | None = None

    def describe(self) -> str:
        """One line for the progress display: status and counts."""
        counts = " ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        return f"{self.status}" + (f" ({counts})" if counts else "")


class BatchJudge(Protocol):
    """What a batch API needs from its synchronous judge."""

    name: str
    config: Any

    def batch_body(self, request: JudgeRequest) -> dict[str, Any]: ...

    def batch_verdict(self, body: dict[str, Any], request_body: dict[str, Any]) -> Verdict: ...


class BatchAPI(Protocol):
    """One provider's batch API (see the module docstring)."""

    provider: str

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        """The request body of ``request`` inside a job."""
        ...

    def custom_id(self, job_key: str, slot: int, attempt: int) -> str:
        """The ``custom_id`` of one request of a job (unique within the job)."""
        ...

    async def upload(self, job_key: str, items: list[tuple[str, dict[str, Any]]]) -> str | None:
        """Upload the job's requests if the provider takes them as a file; its id."""
        ...

    async def submit(
        self, job_key: str, items: list[tuple[str, dict[str, Any]]], file_id: str | None
    ) -> tuple[str, JobStatus]:
        """Create the job; its provider id and status."""
        ...

    async def find(self, job_key: str, n_items: int, since: datetime) -> str | None:
        """The provider id of a job created for ``job_key`` (a create request whose answer
        was lost), or ``None`` when there is none."""
        ...

    async def status(self, job_id: str) -> JobStatus:
        """The job's status now."""
        ...

    async def results(
        self, job_id: str, bodies: dict[str, dict[str, Any]]
    ) -> dict[str, ItemOutcome]:
        """The answers of an ended job by ``custom_id`` (``bodies``: the request bodies, by
        ``custom_id``); a request without an answer is missing from the result."""
        ...

    async def aclose(self) -> None: ...


class HTTPBatchBase:
    """The HTTP plumbing the two providers share: a client with the judge's headers, a
    long deadline and a large body cap; error classification as for judge calls."""

    provider = "http"

    def __init__(
        self, judge: _http.HTTPJudge, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.judge: BatchJudge = judge
        self.name = judge.name
        self._secret = secret = judge._secret
        headers = dict(judge._client.headers)
        config = judge.config.model_copy(
            update={"timeout_s": max(float(judge.config.timeout_s), MIN_TIMEOUT_S)}
        )
        self._client = _http.make_client(
            config, headers, transport, secret=secret, max_body=MAX_RESULTS_BYTES
        )

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        """What the judge would POST for ``request``."""
        return self.judge.batch_body(request)

    def custom_id(self, job_key: str, slot: int, attempt: int) -> str:
        """``<job_key>-s<slot>-a<attempt>`` (Anthropic takes ``[a-zA-Z0-9_-]{1,64}``)."""
        return f"{job_key}-s{slot}-a{attempt}"

    async def _call(
        self, method: str, url: str, *, what: str, job_id: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One batch-endpoint request; a non-2xx answer is raised classified. ``job_id``:
        the request asks about that job (its status, its results): a 404 there says the
        provider does not know the job (``unknown_job``), not that a model is missing."""
        try:
            response = await self._client.request(method, url, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            _http.raise_transport_error(exc, judge_name=self.name, secret=self._secret)
        if not 200 <= response.status_code < 300:
            detail = _http.error_detail(response, self._secret)
            message = f"judge {self.name}: {what}: HTTP {response.status_code}" + (
                f": {detail}" if detail else ""
            )
            if response.status_code == 404 and job_id is not None:
                raise JudgeUnavailable(
                    UNKNOWN_JOB,
                    f"judge {self.name}: {what}: HTTP 404: the provider does not know batch "
                    f"job {job_id}" + (f" ({detail})" if detail else ""),
                )
            raise classify(
                response.status_code, error_body(response.content), response.headers, message
            )
        return response

    async def _json(
        self, method: str, url: str, *, what: str, job_id: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self._call(method, url, what=what, job_id=job_id, **kwargs)
        return _http.json_body(response, judge_name=self.name)

    def item_error(self, status: int, body: Any) -> JudgeError:
        """The classified error of one request's error answer inside a job."""
        raw = json.dumps(body) if not isinstance(body, str) else body
        detail = _error_message(body) or raw
        text = _http.scrub(detail, self._secret)[:300]
        message = f"judge {self.name}: HTTP {status} in a batch job: {text}"
        return classify(status, error_body(raw), {}, message)

    def item_verdict(self, body: Any, request_body: dict[str, Any]) -> ItemOutcome:
        """The verdict in one request's answer inside a job, or its error."""
        if not isinstance(body, dict):
            return TransientJudgeError("malformed", f"judge {self.name}: an answer is not JSON")
        try:
            return self.judge.batch_verdict(body, request_body)
        except JudgeError as error:
            return error

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _error_message(body: Any) -> str:
    """``error.message`` of an error body (OpenAI and Anthropic nest it), else ''."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return ""


def no_answer(name: str, why: str) -> JudgeError:
    """The error of a request that got no answer in its job (expired, cancelled, missing):
    asked again in the next job while budget remains."""
    return TransientJudgeError("expired", f"judge {name}: {why}")


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL text (lines that are not objects are skipped)."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out
