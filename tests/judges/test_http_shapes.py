"""Request shapes and error classification of the HTTP judges (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from cj_runner.errors import (
    FatalJudgeError,
    JudgeError,
    JudgeUnavailable,
    RateLimited,
    RequestRefused,
    TransientJudgeError,
)
from cj_runner.judges._http import parse_retry_after
from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.openai_compat import OpenAICompatJudge
from cj_runner.judges.prompts import (
    ANSWER_SCHEMA,
    BOUNDED_ANSWER_SCHEMA,
    JUSTIFICATION_MAX_CHARS,
    load_prompt_template,
    render_prompt,
)
from cj_runner.judges.registry import build_judge

from .conftest import make_request

TEMPLATE = load_prompt_template()
ANSWER = {"winner": "B", "confidence": 4, "justification": "B is clearer."}
Handler = Callable[[httpx.Request], httpx.Response]


_DEFAULT = json.dumps(ANSWER)


def openai_ok(
    content: str | None = _DEFAULT, refusal: str | None = None, finish_reason: str = "stop"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 321, "completion_tokens": 23, "total_tokens": 344},
    }


def anthropic_ok(tool: bool = True) -> dict[str, Any]:
    block: dict[str, Any] = (
        {"type": "tool_use", "id": "toolu_1", "name": "record_verdict", "input": ANSWER}
        if tool
        else {"type": "text", "text": "Here you go: " + json.dumps(ANSWER)}
    )
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [block],
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 400, "output_tokens": 30},
    }


class Recorder:
    """A MockTransport handler that records requests and replays scripted responses."""

    def __init__(self, *responses: httpx.Response | Handler) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses[min(len(self.requests), len(self.responses)) - 1]
        return item(request) if callable(item) else item

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def openai_judge(recorder: Recorder, **fields: Any) -> OpenAICompatJudge:
    config = JudgeConfig(
        kind="openai_compatible",
        name="oa",
        model="gpt-4o-mini",
        base_url="https://llm.example/v1",
        api_key_env="KEY",
        **fields,
    )
    judge = build_judge(config, env={"KEY": "sk-test"}, transport=httpx.MockTransport(recorder))
    assert isinstance(judge, OpenAICompatJudge)
    return judge


def anthropic_judge(recorder: Recorder, **fields: Any) -> AnthropicJudge:
    config = JudgeConfig(kind="anthropic", name="an", model="claude-x", api_key_env="KEY", **fields)
    judge = build_judge(config, env={"KEY": "sk-ant-test"}, transport=httpx.MockTransport(recorder))
    assert isinstance(judge, AnthropicJudge)
    return judge


async def test_openai_request_shape_and_verdict() -> None:
    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    judge = openai_judge(recorder, temperature=0.2, max_tokens=77, extra_headers={"X-Team": "t1"})
    request = make_request()
    verdict = await judge.judge(request)
    sent = recorder.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == "https://llm.example/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-team"] == "t1"
    system, user = render_prompt(TEMPLATE, request)
    assert recorder.bodies[0] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0.2,
        "max_completion_tokens": 77,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "record_verdict", "schema": ANSWER_SCHEMA, "strict": True},
        },
    }
    assert (verdict.winner, verdict.confidence, verdict.justification) == ("B", 4, "B is clearer.")
    assert (verdict.tokens_in, verdict.tokens_out) == (321, 23)
    assert verdict.model == "gpt-4o-mini" and verdict.prompt_hash == TEMPLATE.hash
    assert verdict.latency_s >= 0
    await judge.aclose()


async def test_openai_options() -> None:
    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    judge = openai_judge(
        recorder, structured_output=False, max_tokens_param="max_completion_tokens"
    )
    await judge.judge(make_request())
    body = recorder.bodies[0]
    assert "response_format" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 512
    await judge.aclose()


async def test_openai_without_key_sends_no_authorization() -> None:
    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    config = JudgeConfig(kind="openai_compatible", base_url="http://127.0.0.1:1/v1")
    judge = build_judge(config, env={}, transport=httpx.MockTransport(recorder))
    await judge.judge(make_request())
    assert "authorization" not in recorder.requests[0].headers
    await judge.aclose()


async def test_key_in_a_custom_header() -> None:
    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    judge = openai_judge(recorder, api_key_header="api-key")
    await judge.judge(make_request())
    assert recorder.requests[0].headers["api-key"] == "sk-test"
    assert "authorization" not in recorder.requests[0].headers
    await judge.aclose()


async def test_openai_falls_back_one_form_at_a_time_one_request_per_call() -> None:
    reject = httpx.Response(
        400, json={"error": {"message": "Unknown parameter: 'response_format'."}}
    )
    recorder = Recorder(
        reject,
        reject,
        httpx.Response(200, json=openai_ok("```json\n" + json.dumps(ANSWER) + "\n```")),
    )
    judge = openai_judge(recorder)
    with pytest.raises(RequestRefused) as info:
        await judge.judge(make_request())
    assert info.value.kind == "unsupported" and "json_object" in info.value.message
    with pytest.raises(RequestRefused):
        await judge.judge(make_request())
    verdict = await judge.judge(make_request())
    assert verdict.winner == "B"
    formats = [b.get("response_format") for b in recorder.bodies]
    assert formats == [
        {
            "type": "json_schema",
            "json_schema": {"name": "record_verdict", "schema": ANSWER_SCHEMA, "strict": True},
        },
        {"type": "json_object", "schema": BOUNDED_ANSWER_SCHEMA},
        None,
    ]
    # a grammar-constrained server (the json_object form) closes the justification at
    # the cap; strict json_schema keeps the plain schema (OpenAI refuses unknown keywords)
    bounded = formats[1]["schema"]["properties"]["justification"]
    assert bounded == {"type": "string", "maxLength": JUSTIFICATION_MAX_CHARS}
    assert "maxLength" not in json.dumps(formats[0])
    await judge.judge(make_request())  # remembered: no response_format any more
    assert "response_format" not in recorder.bodies[3]
    assert len(recorder.requests) == 4
    await judge.aclose()


async def test_openai_other_400_is_fatal_without_fallback() -> None:
    recorder = Recorder(httpx.Response(400, json={"error": {"message": "model not found"}}))
    judge = openai_judge(recorder)
    with pytest.raises(JudgeUnavailable) as info:
        await judge.judge(make_request())
    assert info.value.kind == "bad_request" and "model not found" in str(info.value)
    assert len(recorder.requests) == 1
    await judge.aclose()


async def test_anthropic_request_shape_and_tool_verdict() -> None:
    recorder = Recorder(httpx.Response(200, json=anthropic_ok()))
    judge = anthropic_judge(recorder, base_url="https://proxy.example/v1", max_tokens=64)
    request = make_request()
    verdict = await judge.judge(request)
    sent = recorder.requests[0]
    assert str(sent.url) == "https://proxy.example/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    import anthropic._constants  # the official SDK: the version it sends

    assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    system, user = render_prompt(TEMPLATE, request)
    body = recorder.bodies[0]
    assert body["model"] == "claude-x" and body["max_tokens"] == 64
    assert body["system"] == system
    assert body["messages"] == [{"role": "user", "content": user}]
    assert body["tools"][0]["name"] == "record_verdict"
    assert body["tools"][0]["input_schema"] == ANSWER_SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert (verdict.winner, verdict.tokens_in, verdict.tokens_out) == ("B", 400, 30)
    await judge.aclose()


async def test_anthropic_default_url_and_text_answer() -> None:
    recorder = Recorder(httpx.Response(200, json=anthropic_ok(tool=False)))
    judge = anthropic_judge(recorder, structured_output=False)
    verdict = await judge.judge(make_request())
    assert str(recorder.requests[0].url) == "https://api.anthropic.com/v1/messages"
    assert "tools" not in recorder.bodies[0]
    assert verdict.confidence == 4
    await judge.aclose()


def _status(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": f"status {status}"}}, headers=headers)


def _raise(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


CLASSIFICATION: list[tuple[str, httpx.Response | Handler, type[JudgeError], str]] = [
    ("429", _status(429, {"retry-after": "3"}), RateLimited, "rate_limit"),
    ("500", _status(500), TransientJudgeError, "server_error"),
    ("503", _status(503), TransientJudgeError, "server_error"),
    ("529", _status(529), TransientJudgeError, "server_error"),
    ("408", _status(408), TransientJudgeError, "timeout"),
    ("401", _status(401), JudgeUnavailable, "auth"),
    ("403", _status(403), JudgeUnavailable, "permission"),
    ("404", _status(404), JudgeUnavailable, "model_not_found"),
    ("422", _status(422), JudgeUnavailable, "bad_request"),
    ("read timeout", _raise(httpx.ReadTimeout("slow")), TransientJudgeError, "timeout"),
    ("connect timeout", _raise(httpx.ConnectTimeout("slow")), TransientJudgeError, "timeout"),
    ("refused", _raise(httpx.ConnectError("refused")), TransientJudgeError, "connection"),
    ("dropped", _raise(httpx.RemoteProtocolError("closed")), TransientJudgeError, "connection"),
    ("reset", _raise(httpx.ReadError("reset")), TransientJudgeError, "connection"),
    ("not json", httpx.Response(200, text="<html>oops</html>"), TransientJudgeError, "malformed"),
    ("json list", httpx.Response(200, json=[1, 2]), TransientJudgeError, "malformed"),
]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("label", "response", "error_type", "kind"), CLASSIFICATION, ids=[c[0] for c in CLASSIFICATION]
)
async def test_classification(
    api: str,
    label: str,
    response: httpx.Response | Handler,
    error_type: type[JudgeError],
    kind: str,
) -> None:
    recorder = Recorder(response)
    judge = openai_judge(recorder) if api == "openai" else anthropic_judge(recorder)
    with pytest.raises(error_type) as info:
        await judge.judge(make_request())
    assert info.value.kind == kind
    assert type(info.value) is error_type
    if isinstance(info.value, RateLimited):
        assert info.value.retry_after == 3.0
    await judge.aclose()


OPENAI_ANSWERS: list[tuple[str, dict[str, Any], type[JudgeError], str]] = [
    ("refusal", openai_ok(None, refusal="I can't help."), FatalJudgeError, "refused"),
    ("content filter", openai_ok(finish_reason="content_filter"), FatalJudgeError, "refused"),
    ("empty", openai_ok(""), TransientJudgeError, "malformed"),
    ("null content", openai_ok(None), TransientJudgeError, "malformed"),
    ("prose", openai_ok("A is better"), TransientJudgeError, "malformed"),
    ("no choices", {"choices": []}, TransientJudgeError, "malformed"),
    (
        "bad winner",
        openai_ok('{"winner": "C", "confidence": 3, "justification": ""}'),
        TransientJudgeError,
        "malformed",
    ),
]


@pytest.mark.parametrize(
    ("label", "body", "error_type", "kind"), OPENAI_ANSWERS, ids=[c[0] for c in OPENAI_ANSWERS]
)
async def test_openai_answers(
    label: str, body: dict[str, Any], error_type: type[JudgeError], kind: str
) -> None:
    judge = openai_judge(Recorder(httpx.Response(200, json=body)))
    with pytest.raises(error_type) as info:
        await judge.judge(make_request())
    assert info.value.kind == kind
    assert str(info.value).startswith("judge oa: ")
    await judge.aclose()


ANTHROPIC_ANSWERS: list[tuple[str, dict[str, Any], type[JudgeError], str]] = [
    (
        "refusal",
        {**anthropic_ok(), "content": [], "stop_reason": "refusal"},
        FatalJudgeError,
        "refused",
    ),
    ("empty", {**anthropic_ok(), "content": []}, TransientJudgeError, "malformed"),
    (
        "bad tool input",
        {
            **anthropic_ok(),
            "content": [
                {"type": "tool_use", "id": "t", "name": "record_verdict", "input": {"winner": "X"}}
            ],
        },
        TransientJudgeError,
        "malformed",
    ),
    ("no content", {"type": "message"}, TransientJudgeError, "malformed"),
]


@pytest.mark.parametrize(
    ("label", "body", "error_type", "kind"),
    ANTHROPIC_ANSWERS,
    ids=[c[0] for c in ANTHROPIC_ANSWERS],
)
async def test_anthropic_answers(
    label: str, body: dict[str, Any], error_type: type[JudgeError], kind: str
) -> None:
    judge = anthropic_judge(Recorder(httpx.Response(200, json=body)))
    with pytest.raises(error_type) as info:
        await judge.judge(make_request())
    assert info.value.kind == kind
    await judge.aclose()


async def test_missing_usage_falls_back_to_estimates() -> None:
    body = openai_ok()
    del body["usage"]
    judge = openai_judge(Recorder(httpx.Response(200, json=body)))
    verdict = await judge.judge(make_request())
    assert verdict.tokens_in > 50 and verdict.tokens_out > 5
    await judge.aclose()


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
    assert parse_retry_after(httpx.Headers({"retry-after": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=lambda: now) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": past}), now=lambda: now) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


async def test_rate_limiter_is_applied_before_sending() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    config = JudgeConfig(kind="openai_compatible", base_url="http://x/v1", requests_per_minute=6)
    judge = OpenAICompatJudge(
        config,
        api_key=None,
        template=TEMPLATE,
        transport=httpx.MockTransport(recorder),
        sleep=fake_sleep,
        clock=lambda: now[0],
    )
    await judge.judge(make_request())
    assert sleeps == []
    await judge.judge(make_request())
    assert sleeps == [pytest.approx(10.0)]  # 6/min = one every 10 s
    assert len(recorder.requests) == 2
    await judge.aclose()
