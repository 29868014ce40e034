"""Issue 12: realistic provider answers replayed on 127.0.0.1, through `cj-run execute`.

Each case is a server that behaves as a provider does today (shapes from the official
SDKs' types, see tests/replay.py): a model that refuses `temperature`, llama.cpp's 500 on
`json_schema`, truncated and reasoning answers, `<think>` text, `tool_calls`, fatal
errors (401, insufficient quota, credit too low), 529 with `retry-after`, 503 with
`x-should-retry: false`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.helpers import LOWER5, query, report, run
from tests.replay import (
    Received,
    ReplayServer,
    Reply,
    anthropic_error,
    anthropic_message,
    openai_completion,
    openai_error,
    verdict_for,
)

KEY = "sk-replay-7f3c9a1e5b2d4c6e"
PRICES = {"price_input_per_mtok": 3.0, "price_output_per_mtok": 15.0}


def profile(tmp: Path, server: ReplayServer, kind: str, model: str, **extra: Any) -> Path:
    data = {
        "kind": kind,
        "name": f"replay-{kind}",
        "model": model,
        "base_url": server.url if kind == "openai_compatible" else server.root_url,
        "api_key_env": "CJ_REPLAY_KEY",
        "timeout_s": 60,  # no case here is a timeout; errors are asserted exactly
        "max_tokens": 200,
        **PRICES,
        **extra,
    }
    path = tmp / "judge.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def execute(
    tmp: Path, judge: Path, *extra: str, expect: int | None = None
) -> tuple[int, dict[str, Any]]:
    result = run(
        [
            "execute",
            "--db",
            str(tmp / "cj.db"),
            "--json",
            "--inventory",
            str(LOWER5),
            "--profile",
            "mock_lower5",
            "--judge",
            str(judge),
            "--set",
            "RETRY_BASE_DELAY_S=0.01",
            "--set",
            "RETRY_MAX_DELAY_S=0.05",
            *extra,
        ]
    )
    assert result.exit_code in (0, 1), result.output
    if expect is not None:
        assert result.exit_code == expect, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, summary


def final_answers_read(tmp: Path) -> list[tuple[Any, ...]]:
    """(stored winner, whether A is the longer essay) of every answered comparison: the
    replay's verdict is "the longer essay wins", its decoys say the opposite."""
    return query(
        tmp / "cj.db",
        "SELECT c.winner, length(ta.text) >= length(tb.text) FROM comparisons c "
        "JOIN nodes a ON a.batch_id = c.batch_id AND a.idx = c.a_idx "
        "JOIN nodes b ON b.batch_id = c.batch_id AND b.idx = c.b_idx "
        "JOIN texts ta ON ta.checksum = a.checksum JOIN texts tb ON tb.checksum = b.checksum "
        "WHERE c.status = 'success'",
    )


def attempts(tmp: Path) -> list[tuple[Any, ...]]:
    return query(
        tmp / "cj.db",
        "SELECT slot, attempt, status, error_kind, tokens_in, tokens_out, tokens_cached "
        "FROM comparisons WHERE call_no IS NOT NULL ORDER BY call_no",
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CJ_REPLAY_KEY", KEY)


# ---------------------------------------------------------------- request capabilities


def refuses_temperature(received: Received) -> Reply:
    if "temperature" in received.body:
        return openai_error(
            400,
            "Unsupported value: 'temperature' does not support 0 with this model. "
            "Only the default (1) value is supported.",
            param="temperature",
            code="unsupported_value",
        )
    if "max_tokens" in received.body:
        return openai_error(
            400,
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    return openai_completion(received, reasoning_tokens=40)


def test_a_model_unknown_to_the_rules_that_refuses_temperature_completes(
    tmp_path: Path,
) -> None:
    with ReplayServer(refuses_temperature) as server:
        judge = profile(tmp_path, server, "openai_compatible", "acme-reasoner-2")
        _, s = execute(
            tmp_path, judge, "--no-resampling", "--set", "MAX_CONCURRENT_REQUESTS=2", expect=0
        )
    assert s["status"] == "COMPLETED" and s["successful_comparisons"] == 10
    bodies = [r.body for r in server.requests]
    refused = [b for b in bodies if "temperature" in b or "max_tokens" in b]
    # each refusal is one request, stored and counted; at most the calls in flight
    # when the server first said no carried the refused part
    assert len(bodies) == s["calls_sent"] == 10 + len(refused)
    assert 2 <= len(refused) <= 4
    assert s["attempt_errors"] == {"unsupported": len(refused)}
    assert all("temperature" not in b and "max_completion_tokens" in b for b in bodies[-5:])


def test_known_reasoning_models_never_get_temperature(tmp_path: Path) -> None:
    with ReplayServer(refuses_temperature) as server:
        judge = profile(tmp_path, server, "openai_compatible", "gpt-5-mini")
        _, s = execute(tmp_path, judge, "--no-resampling", expect=0)
    assert s["attempt_errors"] == {}
    assert len(server.requests) == s["calls_sent"] == 10


def anthropic_refuses_temperature(received: Received) -> Reply:
    if "temperature" in received.body:
        return anthropic_error(
            400, "invalid_request_error", "`temperature` is deprecated for this model."
        )
    return anthropic_message(received)


def test_anthropic_newest_models_get_no_temperature_and_the_sdk_version(tmp_path: Path) -> None:
    import anthropic._constants

    with ReplayServer(anthropic_refuses_temperature) as server:
        judge = profile(tmp_path, server, "anthropic", "claude-opus-4-7")
        _, s = execute(tmp_path, judge, "--no-resampling", expect=0)
    assert s["attempt_errors"] == {} and len(server.requests) == 10
    first = server.requests[0]
    assert first.path == "/v1/messages"
    assert first.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert first.body["tool_choice"] == {"type": "tool", "name": "record_verdict"}


def llama_cpp(received: Received) -> Reply:
    """llama-cpp-python's server: 500 on json_schema, json_object with a schema works."""
    fmt = received.body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return Reply(
            500,
            {
                "error": {
                    "code": 500,
                    "message": "Input should be 'text' or 'json_object'",
                    "type": "server_error",
                }
            },
        )
    assert fmt == {"type": "json_object", "schema": fmt["schema"]}
    return openai_completion(received, prompt_tokens=700, completion_tokens=30)


def test_llama_cpp_500_on_json_schema_falls_back_to_json_object(tmp_path: Path) -> None:
    with ReplayServer(llama_cpp) as server:
        judge = profile(tmp_path, server, "openai_compatible", "smollm2", api_key_env=None)
        _, s = execute(
            tmp_path, judge, "--no-resampling", "--set", "MAX_CONCURRENT_REQUESTS=1", expect=0
        )
    types = [r.body["response_format"]["type"] for r in server.requests]
    assert types == ["json_schema"] + ["json_object"] * 10  # remembered for the batch
    assert s["calls_sent"] == 11 and s["attempt_errors"] == {"unsupported": 1}


# ---------------------------------------------------------------- truncation and billing


def always_truncated(received: Received) -> Reply:
    return openai_completion(
        received, content='{"', finish_reason="length", prompt_tokens=900, completion_tokens=300
    )


def test_a_truncated_answer_is_billed_at_most_twice_and_stored_as_truncated(
    tmp_path: Path,
) -> None:
    with ReplayServer(always_truncated) as server:
        judge = profile(tmp_path, server, "openai_compatible", "acme-1", max_tokens_ceiling=800)
        code, s = execute(tmp_path, judge, "--no-resampling", "--set", "MIN_SUCCESS_RATE=0.5")
    assert code == 1 and s["status"] == "FAILED" and s["successful_comparisons"] == 0
    rows = attempts(tmp_path)
    assert len(rows) == len(server.requests) == 2 * s["failed_comparisons"]
    assert {(r[2], r[3]) for r in rows} == {("retried", "truncated"), ("failed", "truncated")}
    assert s["attempt_errors"] == {"truncated": len(rows)}
    limits = sorted({r.body["max_tokens"] for r in server.requests})
    assert limits == [200, 800]  # the retry asks with the profile's ceiling
    # every billed token is counted, though no answer was usable
    assert all(r[4:6] == (900, 300) for r in rows)
    assert s["cost_usd"] == pytest.approx(server.billed(3.0, 15.0, 3.0), rel=1e-9)


def mixed_answers(received: Received) -> Reply:
    """Every shape at once: cached input, think tags, tool calls, reasoning that used the
    whole allowance, a malformed answer (billed), a plain one."""
    n = received.index % 6
    verdict = verdict_for(received)
    if n == 0:
        return openai_completion(received, cached_tokens=640, prompt_tokens=900)
    if n == 1:
        wrong = {**verdict, "winner": "B" if verdict["winner"] == "A" else "A"}
        text = f"<think>Maybe {json.dumps(wrong)}... no.</think>\n{json.dumps(verdict)}"
        return openai_completion(received, content=text, completion_tokens=420)
    if n == 2:
        return openai_completion(received, tool_call=True, completion_tokens=45)
    if n == 3 and received.body.get("max_tokens", 0) <= 200:
        return openai_completion(
            received,
            content="",
            finish_reason="length",
            reasoning_tokens=200,
            completion_tokens=200,
        )
    if n == 4 and received.index < 12:
        return openai_completion(received, content="A, clearly.", completion_tokens=5)
    return openai_completion(received)


def test_cost_is_the_sum_of_every_attempts_reported_tokens(tmp_path: Path) -> None:
    with ReplayServer(mixed_answers) as server:
        judge = profile(
            tmp_path,
            server,
            "openai_compatible",
            "local-model",
            price_cached_input_per_mtok=0.3,
            max_tokens_param="max_tokens",
        )
        _, s = execute(tmp_path, judge, "--set", "MAX_CONCURRENT_REQUESTS=1", expect=0)
    assert s["status"] == "COMPLETED"
    rows = attempts(tmp_path)
    assert len(rows) == len(server.requests) == s["calls_sent"]
    assert s["tokens_in"] == sum(u[0] for u in server.usage)
    assert s["tokens_out"] == sum(u[1] for u in server.usage)
    assert s["tokens_cached"] == sum(u[2] for u in server.usage) > 0
    assert s["cost_usd"] == pytest.approx(server.billed(3.0, 15.0, 0.3), rel=1e-6)
    exported = report(
        ["comparisons", s["batch_id"], "--format", "json", "--db", str(tmp_path / "cj.db")]
    )
    per_call = [r["cost_usd"] or 0.0 for r in json.loads(exported.stdout)["comparisons"]]
    assert sum(per_call) == pytest.approx(s["cost_usd"], rel=1e-6)
    assert {"truncated", "malformed"} <= set(s["attempt_errors"])
    # the verdict is always the final answer, never the one inside <think>
    winners = final_answers_read(tmp_path)
    assert winners and all((w == "A") == bool(longer) for w, longer in winners)


# ---------------------------------------------------------------- fatal and transient errors

FATAL = {
    "401": lambda r: openai_error(
        401,
        f"Incorrect API key provided: {KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    ),
    "insufficient_quota": lambda r: openai_error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    ),
    "credit_too_low": lambda r: anthropic_error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
        "Billing to upgrade or purchase credits.",
    ),
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_a_fatal_error_stops_the_batch_at_once(tmp_path: Path, case: str) -> None:
    kind = "anthropic" if case == "credit_too_low" else "openai_compatible"
    with ReplayServer(FATAL[case]) as server:
        judge = profile(tmp_path, server, kind, "some-model")
        _, s = execute(tmp_path, judge, "--set", "MAX_CONCURRENT_REQUESTS=3", expect=1)
    assert s["status"] == "FAILED" and s["stop_reason"] == "judge_unavailable"
    assert 1 <= len(server.requests) <= 3  # no new sends after the first answer
    assert s["calls_sent"] == len(server.requests) == len(attempts(tmp_path))
    assert s["judge_error"] and KEY[:8] not in json.dumps(s)
    expected_words = {"401": "Incorrect API key", "insufficient_quota": "quota"}
    assert expected_words.get(case, "credit balance") in s["judge_error"]
    left = query(tmp_path / "cj.db", "SELECT DISTINCT status FROM comparisons")
    assert "planned" not in {r[0] for r in left}


def overloaded_then_unavailable(received: Received) -> Reply:
    n = received.index
    if n % 5 == 1:
        return anthropic_error(
            529, "overloaded_error", "Overloaded", {"retry-after": "20", "x-should-retry": "true"}
        )
    if n == 3:
        return anthropic_error(503, "api_error", "Service unavailable", {"x-should-retry": "false"})
    return anthropic_message(received, cache_read=300)


def test_transient_errors_wait_as_asked_capped_and_x_should_retry_false_is_final(
    tmp_path: Path,
) -> None:
    # retry-after: 20 is capped at RETRY_MAX_DELAY_S (0.05 s here); a run that slept 20 s
    # per 529 would not finish this test
    with ReplayServer(overloaded_then_unavailable) as server:
        judge = profile(tmp_path, server, "anthropic", "claude-sonnet-4-5", temperature=0.0)
        _, s = execute(
            tmp_path, judge, "--no-resampling", "--set", "MAX_CONCURRENT_REQUESTS=1", expect=0
        )
    rows = attempts(tmp_path)
    failed = [r for r in rows if r[2] == "failed"]
    assert [(r[3], r[1]) for r in failed] == [("server_error", 1)]  # not retried
    assert s["attempt_errors"]["server_error"] == sum(1 for r in rows if r[3] == "server_error")
    assert "temperature" in server.requests[0].body  # Sonnet 4.5 still takes it
    assert s["tokens_cached"] == 300 * s["successful_comparisons"]


def thinking_refuses_forced_tool(received: Received) -> Reply:
    body = received.body
    if body.get("thinking") and body.get("tool_choice", {}).get("type") == "tool":
        return anthropic_error(
            400,
            "invalid_request_error",
            "Thinking may not be enabled when tool_choice forces tool use.",
        )
    verdict = verdict_for(received)
    wrong = {**verdict, "winner": "B" if verdict["winner"] == "A" else "A"}
    blocks = [
        {"type": "thinking", "thinking": f"Draft: {json.dumps(wrong)}", "signature": "EqQB"},
        {"type": "text", "text": json.dumps(verdict), "citations": None},
    ]
    return anthropic_message(received, blocks=blocks, output_tokens=900)


def test_anthropic_thinking_with_a_forced_tool_falls_back_to_a_json_answer(
    tmp_path: Path,
) -> None:
    with ReplayServer(thinking_refuses_forced_tool) as server:
        judge = profile(
            tmp_path,
            server,
            "anthropic",
            "claude-opus-4-8",
            thinking="enabled",
            structured_output="tool",
        )
        _, s = execute(
            tmp_path, judge, "--no-resampling", "--set", "MAX_CONCURRENT_REQUESTS=1", expect=0
        )
    first, later = server.requests[0].body, server.requests[1].body
    assert first["tool_choice"]["type"] == "tool" and "tools" not in later
    assert later["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert later["max_tokens"] == 200 + 2048 and "temperature" not in later
    assert s["attempt_errors"] == {"unsupported": 1} and s["successful_comparisons"] == 10
    winners = final_answers_read(tmp_path)
    assert winners and all((w == "A") == bool(longer) for w, longer in winners)  # not thinking


# ---------------------------------------------------------------- plan


def test_plan_takes_the_same_judge_overrides_as_execute(tmp_path: Path) -> None:
    result = run(
        [
            "plan",
            "--inventory",
            str(LOWER5),
            "--judge",
            "openai",
            "--judge-model",
            "gpt-5-mini",
            "--judge-base-url",
            "https://example.openai.azure.com/openai/v1?api-version=preview",
            "--judge-max-tokens",
            "150",
            "--format",
            "json",
        ]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["model"] == "gpt-5-mini"
    shape = plan["judge_request"]
    assert shape["base_url"].endswith("?api-version=preview")
    assert shape["rule"] == "openai-reasoning" and shape["temperature"] is None
    assert shape["max_tokens_param"] == "max_completion_tokens" and shape["max_tokens"] == 150
