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
it learns the job id). :meth:`BatchDesk.refuse` makes the next batch requests answer an
error (a refused key, no credit, a rate limit...) in the provider's own words, with the
status and error type that provider sends (the table in ``mock_dialects``).

The desk is one class in parts, one module each: ``mock_batches_jobs`` (the jobs and how
one looks on each API's wire), ``mock_batches_desk`` (the shared state, holds, listings
and a job's life cycle), ``mock_batches_openai`` (files and batches) and
``mock_batches_anthropic`` (message batches); :class:`BatchDesk` routes a request to them.
"""

from __future__ import annotations

import urllib.parse

from cj_runner.judges.mock_batches_anthropic import _AnthropicDesk
from cj_runner.judges.mock_batches_desk import _Invalid, _NotFound
from cj_runner.judges.mock_batches_jobs import BatchApi, BatchError, Hold, HoldAction, MockJob
from cj_runner.judges.mock_batches_openai import _OpenAIDesk

__all__ = ["BatchApi", "BatchDesk", "BatchError", "Hold", "HoldAction", "MockJob"]


class BatchDesk(_OpenAIDesk, _AnthropicDesk):
    """The batch endpoints' state and answers (thread-safe)."""

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
            return self._error(api, "not_found", str(exc))
        except _Invalid as exc:
            return self._error(api, "bad_request", str(exc))
