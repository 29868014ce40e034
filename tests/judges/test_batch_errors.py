"""The errors of the batch endpoints, in each provider's own words, and how our batch
client reads them (spec section 10: a bad key, no credit, no permission, an invalid
request stop the judge; a rate limit, an overloaded or failing server are transient and
wait as long as the provider asks).

serve-mock's batch desk answers each error kind (``BatchDesk.refuse``) with the status
and error type the provider sends; the official ``openai`` and ``anthropic`` clients are
the oracles of the wire (each raises its own error class for it, and reads the error
type we meant), then our client (:mod:`cj_runner.judges.batch_api`) classifies the same
answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from cj_runner.errors import JudgeError, JudgeUnavailable, RateLimited, TransientJudgeError
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.registry import build_batch_api, build_judge
from cj_runner.judges.server import MockJudgeServer

KEY = "sk-batch-errors"
WAIT_S = 2.0

#: kind -> (OpenAI status, its error type, the SDK's class; Anthropic the same)
WIRE: dict[str, tuple[int, str, type[Exception], int, str, type[Exception]]] = {
    "auth": (
        401, "invalid_request_error", openai.AuthenticationError,
        401, "authentication_error", anthropic.AuthenticationError,
    ),
    "permission": (
        403, "request_forbidden", openai.PermissionDeniedError,
        403, "permission_error", anthropic.PermissionDeniedError,
    ),
    "quota": (
        429, "insufficient_quota", openai.RateLimitError,
        400, "invalid_request_error", anthropic.BadRequestError,
    ),
    "rate_limit": (
        429, "requests", openai.RateLimitError,
        429, "rate_limit_error", anthropic.RateLimitError,
    ),
    "overloaded": (
        503, "server_error", openai.InternalServerError,
        529, "overloaded_error", anthropic.OverloadedError,
    ),
    "server_error": (
        500, "server_error", openai.InternalServerError,
        500, "api_error", anthropic.InternalServerError,
    ),
    "not_found": (
        404, "invalid_request_error", openai.NotFoundError,
        404, "not_found_error", anthropic.NotFoundError,
    ),
    "bad_request": (
        400, "invalid_request_error", openai.BadRequestError,
        400, "invalid_request_error", anthropic.BadRequestError,
    ),
}  # fmt: skip

#: kind -> what spec section 10 says our client makes of it:
#: (error class, kind, transient, the wait it asks for)
OURS: dict[str, tuple[type[JudgeError], str | None, bool, float | None]] = {
    "auth": (JudgeUnavailable, "auth", False, None),
    "permission": (JudgeUnavailable, "permission", False, None),
    "quota": (JudgeUnavailable, "quota", False, None),
    "rate_limit": (RateLimited, "rate_limit", True, WAIT_S),
    "overloaded": (TransientJudgeError, "server_error", True, WAIT_S),
    "server_error": (TransientJudgeError, "server_error", True, None),
    # a job the provider does not know (a 404 at its status endpoint): ``unknown_job``,
    # not a missing model; the batch runner asks again a few times, then stops resumable,
    # never finalizes (services/batch_jobs.py)
    "not_found": (JudgeUnavailable, "unknown_job", False, None),
    "bad_request": (JudgeUnavailable, "bad_request", False, None),
}


@pytest.fixture
def server() -> Iterator[MockJudgeServer]:
    served = MockJudgeServer(JudgeConfig(model="mock-model"), api_key=KEY).start()
    yield served
    served.stop()


def _refuse(server: MockJudgeServer, kind: str) -> None:
    waits = kind in ("rate_limit", "overloaded")
    server.batches.refuse(kind, retry_after_s=WAIT_S if waits else None)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(WIRE))
def test_each_error_in_the_providers_words(server: MockJudgeServer, kind: str) -> None:
    o_status, o_type, o_class, a_status, a_type, a_class = WIRE[kind]
    _refuse(server, kind)
    with (
        openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client,
        pytest.raises(o_class) as o_raised,
    ):
        client.batches.retrieve("batch_000001mock")
    assert isinstance(o_raised.value, openai.APIStatusError)
    assert o_raised.value.status_code == o_status
    assert o_raised.value.type == o_type
    _refuse(server, kind)
    with anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0) as a_client:
        with pytest.raises(a_class) as a_raised:
            a_client.messages.batches.retrieve("msgbatch_000001mock")
        assert isinstance(a_raised.value, anthropic.APIStatusError)
        assert a_raised.value.status_code == a_status
        body: Any = a_raised.value.body
        assert body["type"] == "error" and body["error"]["type"] == a_type
        # a refusal answers one request: the next one is the desk's own answer
        with pytest.raises(anthropic.NotFoundError):
            a_client.messages.batches.retrieve("msgbatch_000001mock")


def test_an_unknown_job_or_a_bad_body_is_the_providers_error(server: MockJudgeServer) -> None:
    """The desk's own errors (not asked for by a test): an unknown id is OpenAI's 404
    ``invalid_request_error`` and Anthropic's 404 ``not_found_error``; a body that is not
    JSON is a 400 ``invalid_request_error`` on both."""
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.batches.retrieve("batch_nothing")
        assert missing.value.type == "invalid_request_error"
        assert "batch_nothing" in missing.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            client.post("/batches", body="not json", cast_to=object)  # type: ignore[arg-type]
        assert bad.value.type == "invalid_request_error"
    with anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0) as a_client:
        with pytest.raises(anthropic.NotFoundError) as a_missing:
            a_client.messages.batches.retrieve("msgbatch_nothing")
        a_body: Any = a_missing.value.body
        assert a_body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", sorted(OURS))
def test_our_batch_client_classifies_each_error_as_spec_10_says(
    server: MockJudgeServer, provider: str, kind: str
) -> None:
    error_class, error_kind, transient, wait = OURS[kind]
    config = JudgeConfig(
        kind="openai_compatible" if provider == "openai" else "anthropic",
        name=provider,
        model="mock-model",
        base_url=server.url if provider == "openai" else server.root_url,
        api_key_env="KEY",
        batch=True,
    )
    api = build_batch_api(build_judge(config, env={"KEY": KEY}))
    assert api is not None

    async def _status() -> JudgeError:
        try:
            await api.status("batch_000001mock")
        except JudgeError as error:
            return error
        finally:
            await api.aclose()
        raise AssertionError("the status request did not fail")

    _refuse(server, kind)
    error = asyncio.run(_status())
    assert type(error) is error_class, error
    if error_kind is not None:
        assert error.kind == error_kind
    if kind == "not_found":  # the message names the job, not a model
        assert "does not know batch job batch_000001mock" in error.message
        assert "model" not in error.message
    assert error.transient is transient
    assert error.retry_after == (pytest.approx(wait) if wait is not None else None)
    assert KEY not in str(error)
