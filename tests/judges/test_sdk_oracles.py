"""The official client libraries as oracles of the served mock (issue 12 item 9): every
answer `serve-mock` gives parses with `openai` and `anthropic`, and every error it sends
raises their own typed error, with the provider's codes, request ids and retry headers.

The SDKs talk to the server on 127.0.0.1 with retries off and a 60 s timeout (none of
these tests is about timeouts: a loaded machine must not add one).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from anthropic.types import Message, TextBlock, ThinkingBlock, ToolUseBlock
from openai.types.chat import ChatCompletion

from cj_runner.judges.config import ErrorRates, JudgeConfig, MockServerConfig
from cj_runner.judges.prompts import ANSWER_NAME, ANSWER_SCHEMA
from cj_runner.judges.server import Fault, FaultScript, MockJudgeServer

KEY = "sk-oracle-test"
USER = (
    "Which essay is better?\n<essay_a>\nA long essay with many different words and a "
    "careful argument about phones in school.\n</essay_a>\n<essay_b>\nShort.\n</essay_b>"
)
SCHEMA_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": ANSWER_NAME, "schema": ANSWER_SCHEMA, "strict": True},
}
TOOL: Any = {"name": ANSWER_NAME, "description": "verdict", "input_schema": ANSWER_SCHEMA}

Start = Callable[..., MockJudgeServer]


@pytest.fixture
def serve() -> Iterator[Start]:
    started: list[MockJudgeServer] = []

    def _start(server: MockServerConfig | None = None, **kwargs: Any) -> MockJudgeServer:
        config = JudgeConfig(
            model="mock-model",
            server=server or MockServerConfig(),
            errors=kwargs.pop("errors", ErrorRates()),
        )
        srv = MockJudgeServer(config, api_key=KEY, **kwargs).start()
        started.append(srv)
        return srv

    yield _start
    for srv in started:
        srv.stop()


def oai(server: MockJudgeServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=60)


def ant(server: MockJudgeServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root_url, api_key=key, max_retries=0, timeout=60)


def chat(server: MockJudgeServer, **extra: Any) -> ChatCompletion:
    with oai(server, extra.pop("key", KEY)) as client:
        return client.chat.completions.create(
            model=extra.pop("model", "mock-model"),
            messages=[
                {"role": "system", "content": "You are a fair judge."},
                {"role": "user", "content": extra.pop("user", USER)},
            ],
            **extra,
        )


def message(server: MockJudgeServer, **extra: Any) -> Message:
    if "temperature" in extra:  # this client version no longer takes it as an argument
        extra["extra_body"] = {"temperature": extra.pop("temperature")}
    with ant(server, extra.pop("key", KEY)) as client:
        return client.messages.create(
            model=extra.pop("model", "mock-model"),
            max_tokens=extra.pop("max_tokens", 200),
            system="You are a fair judge.",
            messages=[{"role": "user", "content": extra.pop("user", USER)}],
            **extra,
        )


def _verdict(text: str) -> dict[str, Any]:
    start, end = text.index("{"), text.rindex("}") + 1
    data: dict[str, Any] = json.loads(text[start:end])
    return data


# ------------------------------------------------------------------ answers: OpenAI


def test_openai_answers_parse_plain_and_structured(serve: Start) -> None:
    server = serve()
    plain = chat(server, temperature=0)
    assert isinstance(plain, ChatCompletion)
    choice = plain.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert _verdict(choice.message.content or "")["winner"] in ("A", "B")
    assert plain.usage is not None and plain.usage.prompt_tokens > 0
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    assert plain._request_id and plain._request_id.startswith("req_")

    structured = chat(server, response_format=SCHEMA_FORMAT)
    content = structured.choices[0].message.content or ""
    assert set(json.loads(content)) == {"winner", "confidence", "justification"}
    # a prompt that is not the runner's template is answered too
    other = chat(server, user="Essay A: cats are good pets. Essay B: dogs are loyal friends.")
    assert _verdict(other.choices[0].message.content or "")["winner"] in ("A", "B")


@pytest.mark.parametrize("style", ["inline", "blocks"])
def test_openai_reasoning_answers_parse(serve: Start, style: str) -> None:
    server = serve(MockServerConfig(thinking=style))  # type: ignore[arg-type]
    completion = chat(server, response_format=SCHEMA_FORMAT)
    msg = completion.choices[0].message
    content = msg.content or ""
    assert completion.usage is not None
    details = completion.usage.completion_tokens_details
    assert details is not None and (details.reasoning_tokens or 0) > 0
    final = json.loads(content.split("</think>")[-1])
    if style == "inline":
        assert content.startswith("<think>")
        thought = content.split("</think>")[0]
    else:
        assert "<think>" not in content
        thought = str((msg.model_extra or {})["reasoning_content"])
    # the reasoning holds the other verdict: a client reading it would be wrong
    assert f'"winner": "{"B" if final["winner"] == "A" else "A"}"' in thought


def test_openai_truncated_answer_parses_as_length(serve: Start) -> None:
    server = serve(MockServerConfig(truncate=1.0))
    completion = chat(server, max_completion_tokens=37, response_format=SCHEMA_FORMAT)
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 37
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content or "")


def test_openai_refusal_and_scripted_answers_parse(serve: Start) -> None:
    faults = [
        Fault("refusal"),
        Fault("malformed_answer"),
        Fault("empty_answer"),
    ]
    server = serve(faults=FaultScript(faults))
    refused = chat(server)
    assert refused.choices[0].message.refusal and refused.choices[0].message.content is None
    assert "JSON" in (chat(server).choices[0].message.content or "")
    assert chat(server).choices[0].message.content == ""


# ------------------------------------------------------------------ answers: Anthropic


def test_anthropic_answers_parse_text_and_tool_use(serve: Start) -> None:
    server = serve()
    text = message(server, temperature=0)
    assert isinstance(text, Message) and text.stop_reason == "end_turn"
    block = text.content[0]
    assert isinstance(block, TextBlock) and _verdict(block.text)["winner"] in ("A", "B")
    assert text.usage.input_tokens > 0 and text.usage.output_tokens > 0
    assert text._request_id and text._request_id.startswith("req_")

    tool = message(server, tools=[TOOL], tool_choice={"type": "tool", "name": ANSWER_NAME})
    assert tool.stop_reason == "tool_use"
    use = tool.content[0]
    assert isinstance(use, ToolUseBlock) and use.name == ANSWER_NAME
    assert set(use.input) == {"winner", "confidence", "justification"}  # type: ignore[arg-type]


def test_anthropic_thinking_blocks_parse(serve: Start) -> None:
    server = serve(MockServerConfig(thinking="blocks"))
    msg = message(server)
    thinking, final = msg.content
    assert isinstance(thinking, ThinkingBlock) and thinking.signature
    assert isinstance(final, TextBlock)
    other = "B" if _verdict(final.text)["winner"] == "A" else "A"
    assert f'"winner": "{other}"' in thinking.thinking


def test_anthropic_truncated_and_refused_answers_parse(serve: Start) -> None:
    server = serve(MockServerConfig(truncate=1.0))
    cut = message(server, max_tokens=21, tools=[TOOL])
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 21
    assert all(not isinstance(b, ToolUseBlock) for b in cut.content)

    refusing = serve(faults=FaultScript([Fault("refusal")]))
    refused = message(refusing)
    assert refused.stop_reason == "refusal" and refused.content == []


# ------------------------------------------------------------------ errors


ERROR_CASES: list[tuple[str, dict[str, Any], dict[str, Any], type[Exception], type[Exception]]] = [
    # name, server setup, request extras, OpenAI error, Anthropic error
    ("auth", {}, {"key": "sk-wrong"}, openai.AuthenticationError, anthropic.AuthenticationError),
    (
        "rate_limit",
        {"errors": ErrorRates(rate_limit=1.0)},
        {},
        openai.RateLimitError,
        anthropic.RateLimitError,
    ),
    (
        "quota",
        {"server": MockServerConfig(quota_exhausted=True)},
        {},
        openai.RateLimitError,
        anthropic.BadRequestError,
    ),
    (
        "timeout",
        {"errors": ErrorRates(timeout=1.0)},
        {},
        openai.APIStatusError,
        anthropic.RequestTimeoutError,
    ),
    (
        "server_error",
        {"errors": ErrorRates(server_error=1.0)},
        {},
        openai.InternalServerError,
        anthropic.InternalServerError,
    ),
    (
        "overloaded",
        {"server": MockServerConfig(overloaded=1.0)},
        {},
        openai.InternalServerError,
        anthropic.OverloadedError,
    ),
    (
        "temperature",
        {"server": MockServerConfig(reject_temperature=["mock-*"])},
        {"temperature": 0},
        openai.BadRequestError,
        anthropic.BadRequestError,
    ),
    (
        "model",
        {"server": MockServerConfig(models=["served-*"])},
        {},
        openai.NotFoundError,
        anthropic.NotFoundError,
    ),
    (
        "bad_request",
        {"faults": FaultScript(then=Fault("status", status=400))},
        {},
        openai.BadRequestError,
        anthropic.BadRequestError,
    ),
    (
        "permission",
        {"faults": FaultScript(then=Fault("status", status=403))},
        {},
        openai.PermissionDeniedError,
        anthropic.PermissionDeniedError,
    ),
]


@pytest.mark.parametrize(
    ("name", "setup", "extra", "oai_error", "ant_error"),
    ERROR_CASES,
    ids=[c[0] for c in ERROR_CASES],
)
def test_every_mock_error_raises_the_sdk_typed_error(
    serve: Start,
    name: str,
    setup: dict[str, Any],
    extra: dict[str, Any],
    oai_error: type[Exception],
    ant_error: type[Exception],
) -> None:
    server = serve(**setup)
    with pytest.raises(oai_error) as raised:
        chat(server, **extra)
    error = raised.value
    assert isinstance(error, openai.APIStatusError)
    assert error.request_id and error.request_id.startswith("req_")
    assert isinstance(error.body, dict) and {"message", "type", "param", "code"} <= set(error.body)

    with pytest.raises(ant_error) as raised_a:
        message(server, **extra)
    error_a = raised_a.value
    assert isinstance(error_a, anthropic.APIStatusError)
    assert error_a.request_id and error_a.request_id.startswith("req_")
    assert isinstance(error_a.body, dict) and error_a.body["type"] == "error"
    assert {"type", "message"} <= set(error_a.body["error"])

    if name == "rate_limit":
        assert error.response.headers["retry-after"] == "1"
        assert error.response.headers["retry-after-ms"] == "1000"
        assert error.code == "rate_limit_exceeded"
        assert error_a.response.headers["retry-after"] == "1"
    elif name == "quota":
        assert error.code == "insufficient_quota" and "retry-after" not in error.response.headers
        assert "credit balance is too low" in error_a.message
    elif name == "overloaded":
        assert error_a.status_code == 529 and error_a.body["error"]["type"] == "overloaded_error"
    elif name == "temperature":
        assert error.param == "temperature" and error.code == "unsupported_value"
        assert "`temperature` is deprecated" in error_a.message
    elif name == "model":
        assert error.code == "model_not_found"
    elif name == "timeout":
        assert error.status_code == 408


def test_llama_cpp_style_500_on_json_schema_only(serve: Start) -> None:
    server = serve(MockServerConfig(json_schema_500=True))
    with pytest.raises(openai.InternalServerError) as raised:
        chat(server, response_format=SCHEMA_FORMAT)
    assert "Input should be 'text' or 'json_object'" in raised.value.message
    assert raised.value.type == "internal_server_error"
    answered = chat(server, response_format={"type": "json_object"})
    assert json.loads(answered.choices[0].message.content or "")["winner"] in ("A", "B")


def test_the_serve_mock_command_serves_a_profiles_behaviours(tmp_path: Path) -> None:
    profile = tmp_path / "quota.yaml"
    profile.write_text(
        yaml.safe_dump({"kind": "mock", "model": "m", "server": {"quota_exhausted": True}}),
        encoding="utf-8",
    )
    cj_run = str(Path(sys.executable).with_name("cj-run"))
    command = [cj_run, "serve-mock", "--port", "0", "--judge", str(profile)]
    env = {**os.environ, "COLUMNS": "400"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()  # blocks until the server says where it listens
            url = re.search(r"serving on (http://127\.0\.0\.1:\d+/v1)", line)
            assert url is not None, line
            client = openai.OpenAI(base_url=url.group(1), api_key="k", max_retries=0, timeout=60)
            with client, pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Essay A: x. Essay B: y."}]
                )
            assert raised.value.code == "insufficient_quota"
        finally:
            child.send_signal(signal.SIGINT)
            child.wait(30)
