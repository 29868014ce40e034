"""A planted API key never appears in an error message, a repr, a verdict or a profile dump."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cj_runner.errors import ConfigError, JudgeError
from cj_runner.judges.base import Judge
from cj_runner.judges.config import ErrorRates, JudgeConfig
from cj_runner.judges.registry import build_judge
from cj_runner.judges.server import Fault, FaultScript, MockJudgeServer

from .conftest import make_request, past_the_deadline

SECRET = "sk-PLANTED-0123456789abcdefSECRETSECRET"
StartServer = Callable[..., MockJudgeServer]
APIS = ["openai_compatible", "anthropic"]

SCRIPTED = [
    Fault("rate_limit", retry_after="1"),
    Fault("server_error", echo_credentials=True),
    Fault("status", status=400, echo_credentials=True),
    Fault("status", status=403, echo_credentials=True),
    Fault("status", status=529, echo_credentials=True),
    Fault("malformed_body"),
    Fault("malformed_answer"),
    Fault("empty_answer"),
    Fault("refusal"),
    Fault("close"),
]


def _texts(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), *map(str, error.args)]
    if isinstance(error, JudgeError):
        texts.append(error.message)
    texts.append("".join(traceback.format_exception(error)))
    return texts


async def _collect(judge: Judge, n: int) -> list[str]:
    texts: list[str] = []
    for i in range(n):
        try:
            verdict = await judge.judge(make_request(repeat_index=i))
        except JudgeError as error:
            assert error.__cause__ is None
            texts += _texts(error)
        else:
            texts.append(repr(verdict))
    return texts


def _client(server_url: str, kind: str, **fields: Any) -> Judge:
    config = JudgeConfig(
        kind=kind, base_url=server_url, api_key_env="PLANTED_KEY", timeout_s=60.0, **fields
    )
    return build_judge(config, env={"PLANTED_KEY": SECRET})


@pytest.mark.parametrize("kind", APIS)
async def test_no_error_message_contains_the_key(
    start_server: StartServer, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    # Scripted faults, one per request.
    server = start_server(faults=FaultScript(SCRIPTED))
    judge = _client(server.url, kind)
    texts += await _collect(judge, len(SCRIPTED))
    texts.append(repr(judge))
    await judge.aclose()
    # The key really was sent (so the scrubbing is what keeps it out of the messages).
    sent = server.requests[0].headers
    assert SECRET in (sent.get("authorization", "") + sent.get("x-api-key", ""))

    # A server that rejects the key and echoes it back.
    strict = start_server(api_key="another-key")
    judge = _client(strict.url, kind)
    texts += await _collect(judge, 1)
    await judge.aclose()

    # Errors drawn by the served mock.
    for rates in (
        ErrorRates(timeout=1.0),
        ErrorRates(rate_limit=1.0),
        ErrorRates(server_error=1.0),
        ErrorRates(malformed=1.0),
        ErrorRates(refused=1.0),
    ):
        drawn = start_server(JudgeConfig(errors=rates))
        judge = _client(drawn.url, kind)
        texts += await _collect(judge, 1)
        await judge.aclose()

    # Nobody listening.
    closed = MockJudgeServer(JudgeConfig())
    url = closed.url
    closed.stop()
    judge = _client(url, kind)
    texts += await _collect(judge, 1)
    await judge.aclose()

    # A server that never answers: the client's deadline (60 s, moved past, not waited).
    held = start_server(faults=FaultScript.always(Fault("delay", delay_s=3600.0)))
    judge = _client(held.url, kind)
    with pytest.raises(JudgeError) as info:
        await past_the_deadline(held, judge.judge(make_request()), 60.0, monkeypatch)
    assert info.value.kind == "timeout"
    texts += _texts(info.value)
    await judge.aclose()

    assert len(texts) > 40
    assert any("Incorrect API key provided" in t for t in texts)
    leaked = [t for t in texts if SECRET in t or SECRET[8:30] in t]
    assert leaked == []


async def test_transport_errors_are_scrubbed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"failed with header {request.headers['authorization']}")

    config = JudgeConfig(kind="openai_compatible", base_url="http://x/v1", api_key_env="K")
    judge = build_judge(config, env={"K": SECRET}, transport=httpx.MockTransport(handler))
    with pytest.raises(JudgeError) as info:
        await judge.judge(make_request())
    assert info.value.kind == "connection"
    assert all(SECRET not in t for t in _texts(info.value))
    assert "***" in str(info.value)
    await judge.aclose()


async def test_profiles_and_config_errors_hold_no_key() -> None:
    config = JudgeConfig(kind="anthropic", api_key_env="PLANTED_KEY")
    judge = build_judge(config, env={"PLANTED_KEY": SECRET})
    assert SECRET not in repr(judge)
    await judge.aclose()
    assert SECRET not in config.model_dump_json()
    with pytest.raises(ConfigError) as info:
        build_judge(config, env={})
    assert "PLANTED_KEY" in str(info.value)
