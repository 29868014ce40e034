"""The mock judge: determinism, latent sources, bias, error rates, latency, accounting."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from dataclasses import replace
from typing import Any

import pytest

from cj_runner.errors import FatalJudgeError, JudgeError, RateLimited, TransientJudgeError
from cj_runner.judges.base import Judge, Verdict
from cj_runner.judges.config import ErrorRates, JudgeConfig, LatencyConfig
from cj_runner.judges.mock import MockJudge, essay_latent, p_a_wins, text_feature_latent
from cj_runner.judges.prompts import estimate_tokens, load_prompt_template, render_prompt
from cj_runner.judges.registry import build_judge

from .conftest import make_essay, make_request

TEMPLATE = load_prompt_template()


def _judge(**fields: Any) -> MockJudge:
    return MockJudge(JudgeConfig(**fields), template=TEMPLATE)


def _pairs(n: int = 12) -> list[tuple[Any, Any]]:
    essays = [make_essay(f"e{i}", true_score=str(i / 4)) for i in range(n)]
    return [(a, b) for a in essays for b in essays if a is not b]


async def _outcome(judge: Judge, request: Any) -> tuple[str, Any]:
    try:
        verdict = await judge.judge(request)
    except JudgeError as error:
        return ("error", error.kind)
    return ("ok", (verdict.winner, verdict.confidence, verdict.justification))


async def test_is_a_judge_with_template_hash() -> None:
    judge = _judge(name="m", model="mm", price_input_per_mtok=1.0)
    assert isinstance(judge, Judge)
    assert judge.prompt_hash == TEMPLATE.hash
    verdict = await judge.judge(make_request())
    assert verdict.model == "mm" and verdict.prompt_hash == TEMPLATE.hash
    assert verdict.winner in ("A", "B") and 1 <= verdict.confidence <= 5
    await judge.aclose()


async def test_deterministic_and_independent_of_order_and_concurrency() -> None:
    config = {"seed": 7, "errors": ErrorRates(timeout=0.1, malformed=0.1)}
    requests = [
        make_request(a, b, attempt=att, repeat_index=rep)
        for a, b in _pairs(6)
        for att in (1, 2)
        for rep in (0, 1)
    ]
    judge = _judge(**config)
    sequential = [await _outcome(judge, r) for r in requests]
    shuffled = list(range(len(requests)))
    random.Random(3).shuffle(shuffled)
    other = _judge(**config)
    concurrent = await asyncio.gather(*(_outcome(other, requests[i]) for i in shuffled))
    by_index = dict(zip(shuffled, concurrent, strict=True))
    assert [by_index[i] for i in range(len(requests))] == sequential
    # A different seed changes the answers; attempts and repeats are separate draws.
    changed = [await _outcome(_judge(seed=8, errors=config["errors"]), r) for r in requests]
    assert changed != sequential
    assert len({o for o in sequential if o[0] == "ok"}) > 10


def test_latent_sources_in_order() -> None:
    config = JudgeConfig(anchor_grade_latent={"A": 2.0, "F": -2.0})
    assert essay_latent(make_essay("x", true_score="1.25"), config) == 1.25
    anchor = make_essay("k", is_anchor=True, known_grade="A")
    assert essay_latent(anchor, config) == 2.0
    # The metadata column wins over the grade.
    assert essay_latent(replace(anchor, metadata={"true_score": "-1"}), config) == -1.0
    # No column value, unknown grade, or unparseable value: text features.
    for essay in (
        make_essay("y", "Some words here."),
        make_essay("z", "Some words here.", is_anchor=True, known_grade="C"),
        make_essay("w", "Some words here.", true_score="n/a"),
        make_essay("v", "Some words here.", true_score=""),
    ):
        assert essay_latent(essay, config) == text_feature_latent("Some words here.")
    custom = JudgeConfig(latent_column="quality")
    assert essay_latent(make_essay("q", quality="3"), custom) == 3.0


def test_text_features_prefer_longer_richer_essays() -> None:
    short = "The dog ran. The dog ran. The dog ran."
    rich = " ".join(f"distinct{i} words{i} appear{i}" for i in range(100))
    assert text_feature_latent(rich) > text_feature_latent(short)
    assert -4.0 <= text_feature_latent("") <= 4.0
    assert text_feature_latent(rich * 100) == 4.0 or text_feature_latent(rich * 100) <= 4.0


def test_probability_model() -> None:
    config = JudgeConfig(noise=1.0)
    assert p_a_wins(1.0, 0.0, config) == pytest.approx(1 / (1 + math.exp(-1)))
    assert p_a_wins(0.0, 0.0, JudgeConfig(position_bias=0.1)) == pytest.approx(0.6)
    assert p_a_wins(9.0, 0.0, JudgeConfig(position_bias=0.5)) == 1.0
    assert p_a_wins(-800.0, 0.0, config) == pytest.approx(0.0)
    zero = JudgeConfig(noise=0.0)
    assert (p_a_wins(1, 0, zero), p_a_wins(0, 1, zero), p_a_wins(1, 1, zero)) == (1.0, 0.0, 0.5)


async def _share_a(judge: MockJudge, pairs: list[tuple[Any, Any]], repeats: int) -> float:
    wins = 0
    total = 0
    for a, b in pairs:
        for rep in range(repeats):
            verdict = await judge.judge(make_request(a, b, repeat_index=rep))
            wins += verdict.winner == "A"
            total += 1
    return wins / total


async def test_position_bias_shows_up_statistically() -> None:
    pairs = _pairs(10)  # both orientations: no bias -> about half A wins
    unbiased = await _share_a(_judge(seed=1), pairs, 10)
    biased = await _share_a(_judge(seed=1, position_bias=0.15), pairs, 10)
    assert abs(unbiased - 0.5) < 0.04
    assert abs(biased - 0.65) < 0.04


async def test_better_essay_wins_more_with_less_noise() -> None:
    strong = make_essay("s", true_score="1.0")
    weak = make_essay("w", true_score="0.0")

    async def share(noise: float) -> float:
        judge = _judge(seed=5, noise=noise)
        verdicts = [
            await judge.judge(make_request(strong, weak, repeat_index=r)) for r in range(2000)
        ]
        return sum(v.winner == "A" for v in verdicts) / len(verdicts)

    expected = 1 / (1 + math.exp(-1))
    assert abs(await share(1.0) - expected) < 0.035
    assert await share(0.25) > 0.95
    assert await share(0.0) == 1.0


async def test_always_forces_winner() -> None:
    judge = _judge(always="A", seed=3)
    for a, b in _pairs(5):
        assert (await judge.judge(make_request(a, b))).winner == "A"
    assert (await _judge(always="B").judge(make_request())).winner == "B"


async def test_error_rates_statistical_and_typed() -> None:
    rates = ErrorRates(timeout=0.1, rate_limit=0.05, server_error=0.15, malformed=0.1, refused=0.05)
    judge = _judge(seed=11, errors=rates)
    counts: dict[str, int] = {}
    n = 0
    for a, b in _pairs(10):
        for attempt in range(1, 6):
            n += 1
            try:
                await judge.judge(make_request(a, b, attempt=attempt))
                counts["ok"] = counts.get("ok", 0) + 1
            except RateLimited as error:
                assert error.transient
                counts["rate_limit"] = counts.get("rate_limit", 0) + 1
            except TransientJudgeError as error:
                assert error.kind in ("timeout", "server_error", "malformed")
                counts[error.kind] = counts.get(error.kind, 0) + 1
            except FatalJudgeError as error:
                assert error.kind == "refused" and not error.transient
                counts["refused"] = counts.get("refused", 0) + 1
    expected = {
        "timeout": 0.1,
        "rate_limit": 0.05,
        "server_error": 0.15,
        "malformed": 0.1,
        "refused": 0.05,
        "ok": 0.55,
    }
    for kind, share in expected.items():
        sd = math.sqrt(share * (1 - share) / n)
        assert abs(counts.get(kind, 0) / n - share) < 4 * sd, (kind, counts)


async def test_all_errors_means_no_verdict() -> None:
    judge = _judge(errors=ErrorRates(server_error=1.0))
    for attempt in range(1, 20):
        with pytest.raises(TransientJudgeError):
            await judge.judge(make_request(attempt=attempt))


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def test_zero_latency_never_sleeps() -> None:
    sleep = RecordingSleep()
    judge = build_judge(JudgeConfig(errors=ErrorRates(timeout=0.5)), sleep=sleep)
    for attempt in range(1, 30):
        try:
            verdict = await judge.judge(make_request(attempt=attempt))
            assert verdict.latency_s == 0.0
        except TransientJudgeError:
            pass
    assert sleep.calls == []


async def test_fixed_and_lognormal_latency() -> None:
    sleep = RecordingSleep()
    judge = MockJudge(
        JudgeConfig(latency=LatencyConfig(distribution="fixed", median_ms=50)),
        template=TEMPLATE,
        sleep=sleep,
    )
    verdict = await judge.judge(make_request())
    assert sleep.calls == [0.05] and verdict.latency_s == 0.05

    sleep = RecordingSleep()
    judge = MockJudge(
        JudgeConfig(latency=LatencyConfig(distribution="lognormal", median_ms=50, sigma=0.5)),
        template=TEMPLATE,
        sleep=sleep,
    )
    latencies = [(await judge.judge(make_request(a, b))).latency_s for a, b in _pairs(15)]
    assert sleep.calls == latencies
    assert statistics.median(latencies) == pytest.approx(0.05, rel=0.15)
    logs = [math.log(x) for x in latencies]
    assert statistics.stdev(logs) == pytest.approx(0.5, rel=0.15)


async def test_timeout_raises_after_its_latency() -> None:
    sleep = RecordingSleep()
    judge = MockJudge(
        JudgeConfig(
            latency=LatencyConfig(distribution="fixed", median_ms=30),
            errors=ErrorRates(timeout=1.0),
        ),
        template=TEMPLATE,
        sleep=sleep,
    )
    with pytest.raises(TransientJudgeError) as info:
        await judge.judge(make_request())
    assert info.value.kind == "timeout"
    assert sleep.calls == [0.03]


async def test_tokens_and_confidence() -> None:
    judge = _judge()
    request = make_request(make_essay("a", true_score="3"), make_essay("b", true_score="-3"))
    verdict: Verdict = await judge.judge(request)
    system, user = render_prompt(TEMPLATE, request)
    assert verdict.tokens_in == estimate_tokens(system) + estimate_tokens(user)
    assert verdict.tokens_out == estimate_tokens(verdict.justification) > 0
    assert verdict.confidence == 5  # P(A) ~ 0.998
    close = await judge.judge(
        make_request(make_essay("c", true_score="0"), make_essay("d", true_score="0.01"))
    )
    assert close.confidence == 1
