"""Issue 12: capabilities per model, error classes by provider meaning, provider waits,
reasoning output, query-string base URLs (request shapes through httpx.MockTransport)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cj_runner.errors import (
    FatalJudgeError,
    JudgeUnavailable,
    RateLimited,
    RequestRefused,
    TransientJudgeError,
)
from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.capabilities import builtin_capabilities, resolve_capabilities
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.openai_compat import OpenAICompatJudge
from cj_runner.judges.prompts import parse_verdict_json
from cj_runner.judges.provider_errors import classify, error_body, provider_wait
from cj_runner.judges.registry import build_judge
from cj_runner.judges.retry import RetryPolicy, retry_delay

from .conftest import make_request
from .test_http_shapes import ANSWER, Recorder, openai_ok


def openai_judge(recorder: Recorder, **fields: Any) -> OpenAICompatJudge:
    config = JudgeConfig(
        **{
            "kind": "openai_compatible",
            "name": "oa",
            "model": "local-model",
            "base_url": "https://llm.example/v1",
            "api_key_env": "KEY",
            **fields,
        }
    )
    judge = build_judge(config, env={"KEY": "sk-test"}, transport=httpx.MockTransport(recorder))
    assert isinstance(judge, OpenAICompatJudge)
    return judge


def anthropic_judge(recorder: Recorder, **fields: Any) -> AnthropicJudge:
    config = JudgeConfig(
        **{"kind": "anthropic", "name": "an", "model": "claude-x", "api_key_env": "KEY", **fields}
    )
    judge = build_judge(config, env={"KEY": "sk-ant"}, transport=httpx.MockTransport(recorder))
    assert isinstance(judge, AnthropicJudge)
    return judge


@pytest.mark.parametrize(
    ("kind", "model", "rule", "temperature", "param"),
    [
        ("openai_compatible", "gpt-5", "openai-reasoning", False, "max_completion_tokens"),
        ("openai_compatible", "gpt-5.1-mini", "openai-reasoning", False, "max_completion_tokens"),
        ("openai_compatible", "o4-mini", "openai-reasoning", False, "max_completion_tokens"),
        ("openai_compatible", "openai/o3", "openai-reasoning", False, "max_completion_tokens"),
        ("openai_compatible", "gpt-4o-mini", "openai-chat", True, "max_completion_tokens"),
        ("openai_compatible", "gpt-4.1", "openai-chat", True, "max_completion_tokens"),
        ("openai_compatible", "llama-3.1-8b", "openai-compatible", True, "max_tokens"),
        ("openai_compatible", "olmo-2", "openai-compatible", True, "max_tokens"),
        ("anthropic", "claude-haiku-4-5", "anthropic-legacy", True, "max_tokens"),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic-legacy", True, "max_tokens"),
        ("anthropic", "claude-opus-4-6", "anthropic-legacy", True, "max_tokens"),
        ("anthropic", "claude-opus-4-7", "anthropic", False, "max_tokens"),
        ("anthropic", "claude-sonnet-5", "anthropic", False, "max_tokens"),
    ],
)
def test_builtin_rules(kind: str, model: str, rule: str, temperature: bool, param: str) -> None:
    caps = builtin_capabilities(kind, model)
    assert (caps.rule, caps.temperature, caps.max_tokens_param) == (rule, temperature, param)


def test_profile_overrides_and_thinking() -> None:
    caps = resolve_capabilities("openai_compatible", "local", structured_output="json_object")
    assert caps.forms == ("json_object", "none")
    assert resolve_capabilities("openai_compatible", "x", structured_output=False).forms == (
        "none",
    )
    caps = resolve_capabilities("anthropic", "claude-haiku-4-5", thinking=True)
    assert caps.temperature is False and caps.forms == ("none",)
    config = JudgeConfig(kind="openai_compatible", model="gpt-5", max_tokens_param="max_tokens")
    assert config.capabilities.max_tokens_param == "max_tokens"
    assert config.effective_max_tokens_ceiling == 4 * config.max_tokens


async def test_temperature_null_is_left_out_and_top_p_and_effort_are_sent() -> None:
    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    judge = openai_judge(recorder, temperature=None, top_p=0.9, reasoning_effort="low")
    await judge.judge(make_request())
    body = recorder.bodies[0]
    assert "temperature" not in body and body["top_p"] == 0.9
    assert body["reasoning_effort"] == "low"
    await judge.aclose()


async def test_azure_base_url_keeps_its_query_string() -> None:
    recorder = Recorder(httpx.Response(200, json=openai_ok()))
    judge = openai_judge(
        recorder,
        base_url="https://res.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
        api_key_header="api-key",
    )
    await judge.judge(make_request())
    sent = recorder.requests[0]
    assert str(sent.url) == (
        "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"
        "?api-version=2024-10-21"
    )
    assert sent.headers["api-key"] == "sk-test"
    await judge.aclose()


async def test_anthropic_url_with_query_and_thinking_effort_payload() -> None:
    recorder = Recorder(
        httpx.Response(
            200,
            json={
                "type": "message",
                "content": [
                    {"type": "thinking", "thinking": '{"winner": "A"}', "signature": "s"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    {"type": "text", "text": json.dumps(ANSWER)},
                ],
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": 100,
                    "output_tokens": 700,
                    "cache_read_input_tokens": 800,
                    "cache_creation_input_tokens": 50,
                },
            },
        )
    )
    judge = anthropic_judge(
        recorder,
        base_url="https://gw.example/anthropic?tenant=t1",
        model="claude-opus-4-7",
        thinking="adaptive",
        reasoning_effort="high",
    )
    verdict = await judge.judge(make_request())
    assert str(recorder.requests[0].url) == "https://gw.example/anthropic/v1/messages?tenant=t1"
    body = recorder.bodies[0]
    assert body["thinking"] == {"type": "adaptive"} and "temperature" not in body
    assert body["output_config"] == {"effort": "high"} and "tools" not in body
    assert verdict.winner == "B"  # the text block, not the thinking
    assert (verdict.tokens_in, verdict.tokens_cached, verdict.tokens_out) == (950, 800, 700)
    await judge.aclose()


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        (
            '<think>{"winner": "A", "confidence": 2, "justification": ""}</think>'
            '{"winner": "B", "confidence": 4, "justification": "x"}',
            "B",
        ),
        (
            '<thinking>A is it</thinking>\n```json\n{"winner": "A", "confidence": 3, '
            '"justification": "y"}\n```',
            "A",
        ),
        (
            'still thinking {"winner": "A", "confidence": 2, "justification": ""}</think>'
            '{"winner": "B", "confidence": 4, "justification": "x"}',
            "B",
        ),
    ],
)
def test_reasoning_text_is_never_the_verdict(text: str, winner: str) -> None:
    assert parse_verdict_json(text)[0] == winner


def test_an_unclosed_think_block_has_no_verdict() -> None:
    with pytest.raises(TransientJudgeError) as info:
        parse_verdict_json('<think>{"winner": "A", "confidence": 2, "justification": ""}')
    assert info.value.kind == "malformed"


async def test_tool_calls_with_null_content_are_read() -> None:
    body = openai_ok(None)
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "record_verdict", "arguments": json.dumps(ANSWER)},
        }
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    judge = openai_judge(Recorder(httpx.Response(200, json=body)), structured_output="tool")
    verdict = await judge.judge(make_request())
    assert verdict.winner == "B"
    await judge.aclose()


@pytest.mark.parametrize("finish", ["length", "stop"])
async def test_reasoning_that_spent_every_token_is_truncated_and_billed(finish: str) -> None:
    body = openai_ok("")
    body["choices"][0]["finish_reason"] = finish
    body["usage"] = {
        "prompt_tokens": 500,
        "completion_tokens": 300,
        "total_tokens": 800,
        "completion_tokens_details": {"reasoning_tokens": 300},
        "prompt_tokens_details": {"cached_tokens": 128},
    }
    recorder = Recorder(httpx.Response(200, json=body))
    judge = openai_judge(recorder, model="o4-mini", max_tokens=300, max_tokens_ceiling=1200)
    with pytest.raises(TransientJudgeError) as info:
        await judge.judge(make_request())
    assert info.value.kind == ("truncated" if finish == "length" else "malformed")
    usage = info.value.usage
    assert usage is not None and (usage.tokens_in, usage.tokens_out, usage.tokens_cached) == (
        500,
        300,
        128,
    )
    with pytest.raises(TransientJudgeError):
        await judge.judge(replace(make_request(), after_truncation=True))
    assert [b["max_completion_tokens"] for b in recorder.bodies] == [300, 1200]
    await judge.aclose()


def _err(status: int, body: object, headers: dict[str, str] | None = None) -> Exception:
    return classify(status, error_body(json.dumps(body)), headers or {}, f"HTTP {status}")


@pytest.mark.parametrize(
    ("status", "body", "cls", "kind"),
    [
        (
            401,
            {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}},
            JudgeUnavailable,
            "auth",
        ),
        (
            429,
            {
                "error": {
                    "message": "You exceeded your current quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            JudgeUnavailable,
            "quota",
        ),
        (
            429,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            RateLimited,
            "rate_limit",
        ),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the Anthropic API.",
                },
            },
            JudgeUnavailable,
            "quota",
        ),
        (
            402,
            {"type": "error", "error": {"type": "billing_error", "message": "pay"}},
            JudgeUnavailable,
            "quota",
        ),
        (
            404,
            {"error": {"message": "The model `gpt-9` does not exist", "code": "model_not_found"}},
            JudgeUnavailable,
            "model_not_found",
        ),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                }
            },
            FatalJudgeError,
            "too_long",
        ),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            TransientJudgeError,
            "server_error",
        ),
        (400, {"error": {"message": "bad"}}, JudgeUnavailable, "bad_request"),
        (
            400,
            {
                "error": {
                    "message": "Invalid prompt: your prompt was flagged as potentially "
                    "violating our usage policy.",
                    "type": "invalid_request_error",
                    "code": "invalid_prompt",
                }
            },
            FatalJudgeError,
            "refused",
        ),
    ],
)
def test_classification_by_provider_meaning(
    status: int, body: object, cls: type[Exception], kind: str
) -> None:
    error = _err(status, body)
    assert type(error) is cls and getattr(error, "kind", None) == kind


def test_x_should_retry_false_makes_a_server_error_final() -> None:
    error = _err(503, {"error": {"message": "down"}}, {"x-should-retry": "false"})
    assert isinstance(error, TransientJudgeError) and error.transient is False


NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "Mon, 30 Nov 2026 12:00:30 GMT"}, 30.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"anthropic-ratelimit-tokens-reset": "2026-11-30T12:00:07Z"}, 7.0),
        ({}, None),
    ],
)
def test_provider_wait(headers: dict[str, str], wait: float | None) -> None:
    got = provider_wait(headers, now=lambda: NOW)
    assert got == (pytest.approx(wait) if wait is not None else None)


def test_a_529_asking_for_20_s_waits_20_s_capped_by_the_setting() -> None:
    error = _err(529, {"error": {"message": "Overloaded"}}, {"retry-after": "20"})
    assert isinstance(error, TransientJudgeError) and error.retry_after == 20.0
    rng = random.Random(1)
    long = RetryPolicy(base_delay_s=0.01, max_delay_s=30.0, max_retry_after_s=30.0)
    capped = RetryPolicy(base_delay_s=0.01, max_delay_s=2.0, max_retry_after_s=2.0)
    assert retry_delay(long, 1, error, rng) == 20.0
    assert retry_delay(capped, 1, error, rng) == 2.0


async def test_a_refused_parameter_is_dropped_once_and_remembered() -> None:
    refused = httpx.Response(
        400,
        json={
            "error": {
                "message": "Unsupported value: 'temperature' does not support 0 with this model.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        },
    )
    recorder = Recorder(refused, httpx.Response(200, json=openai_ok()))
    judge = openai_judge(recorder, model="acme-r1")
    with pytest.raises(RequestRefused):
        await judge.judge(make_request())
    await judge.judge(make_request())
    await judge.judge(make_request())
    assert ["temperature" in b for b in recorder.bodies] == [True, False, False]
    await judge.aclose()
