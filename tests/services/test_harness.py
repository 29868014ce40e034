"""The convergence harness, the workflow extensions of issue 8 (audits, adaptive strategies,
statistical stopping rules) and the efficiency benchmark's building blocks."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from benchmarks import bench_efficiency as bench
from cj_runner.config import Settings
from cj_runner.core.continuation import TARGET_RELIABILITY_Z
from cj_runner.core.models import Mode
from cj_runner.core.workflow import WorkflowState
from cj_runner.services.harness import (
    SimulatedJudge,
    WaveRecord,
    latent_sd_for_accuracy,
    run_harness,
)
from cj_runner.services.workflow_setup import workflow_from_settings

NO_STABILITY: dict[str, Any] = {"SCORE_STABILITY_THRESHOLD": 0.0, "MAX_ITERATIONS": 100_000}


def judge_for(n: int, seed: int = 0, sd: float = 1.6, bias: float = 0.0) -> SimulatedJudge:
    truth = np.random.default_rng([seed, 99]).normal(0, sd, n)
    return SimulatedJudge(truth, position_bias=bias)


def ab_counts(wf: WorkflowState) -> tuple[list[int], list[int]]:
    return wf.a_counts.tolist(), wf.b_counts.tolist()


# --------------------------------------------------------------------------- default shapes


def test_default_settings_keep_the_regular_shape() -> None:
    res = run_harness(judge_for(24), Settings(**NO_STABILITY), total_budget=552, seed=3)
    assert res.workflow is not None
    assert res.stop_reason == "budget"
    assert Counter(res.workflow.modes) == {"coverage": 276, "resampling": 276}
    assert ab_counts(res.workflow) == ([23] * 24, [23] * 24)


def test_default_settings_keep_the_lower5_shape() -> None:
    settings = Settings(
        MIN_RESAMPLING_NET_SIZE=5, MAX_RESAMPLING_PASSES_FOR_SMALL_NET=3, **NO_STABILITY
    )
    res = run_harness(judge_for(5), settings, total_budget=60, seed=1)
    assert res.workflow is not None
    assert res.comparisons == 40
    assert ab_counts(res.workflow) == ([8] * 5, [8] * 5)


# --------------------------------------------------------------------------- stop reasons


def test_target_reliability_stops_on_the_robust_estimates_lower_bound() -> None:
    settings = Settings(TARGET_RELIABILITY=0.7, **NO_STABILITY)
    res = run_harness(judge_for(30), settings, total_budget=2000, seed=2)
    assert res.stop_reason == "target_reliability"

    def bound(h: WaveRecord) -> float:
        assert h.robust_reliability is not None and h.robust_reliability_sd is not None
        return h.robust_reliability - TARGET_RELIABILITY_Z * h.robust_reliability_sd

    last = res.history[-1]
    assert bound(last) >= 0.7
    # the bound was below the target at every earlier wave
    earlier = [bound(h) for h in res.history[:-1] if h.robust_reliability is not None]
    assert earlier and max(earlier) < 0.7
    # the estimate itself reached the target earlier: the rule before would have stopped
    # there, with fewer comparisons
    assert any(
        h.robust_reliability is not None and h.robust_reliability >= 0.7 for h in res.history[:-1]
    )
    assert res.calls_sent < 2000


def test_target_max_se_stops_when_every_se_is_small() -> None:
    settings = Settings(
        TARGET_MAX_SE=0.8, MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH=20, **NO_STABILITY
    )
    res = run_harness(judge_for(12), settings, total_budget=3000, seed=4)
    assert res.stop_reason == "target_max_se"
    assert res.final_fit is not None and res.final_fit.se is not None
    assert float(np.max(res.final_fit.se)) <= 0.8
    earlier = [h for h in res.history[:-1]]
    assert earlier
    assert res.calls_sent < 3000


def test_max_cost_stops_on_the_money_budget() -> None:
    settings = Settings(MAX_COST_USD=0.5, **NO_STABILITY)
    res = run_harness(judge_for(20), settings, total_budget=1000, seed=5, cost_per_call_usd=0.01)
    assert res.stop_reason == "max_cost"
    assert res.workflow is not None
    assert 0.5 <= res.workflow.cost_usd < 0.5 + 12 * 0.01 + 1e-9  # stops after that wave
    assert res.calls_sent == 60


def test_stopping_rules_are_off_by_default() -> None:
    res = run_harness(judge_for(12), Settings(**NO_STABILITY), total_budget=100, seed=6)
    assert res.stop_reason == "budget"
    assert all(h.robust_reliability is None for h in res.history)


# --------------------------------------------------------------------------- audits


@pytest.mark.parametrize("strategy", ["balanced", "infogain"])
def test_audit_share_spends_that_share_on_random_pairs(strategy: str) -> None:
    settings = Settings(AUDIT_SHARE=0.2, MATCHING_STRATEGY=strategy, **NO_STABILITY)
    res = run_harness(judge_for(16), settings, total_budget=360, seed=7)
    wf = res.workflow
    assert wf is not None
    counts = Counter(wf.modes)
    assert 0.12 <= counts["audit"] / len(wf.modes) <= 0.28
    assert counts["resampling"] > 0  # coverage completed and a pass ran


def test_audit_pairs_come_last_and_never_repeat_a_wave_or_pass_edge() -> None:
    settings = Settings(
        AUDIT_SHARE=0.5, COMPARISONS_PER_STABILITY_CHECK_ITERATION=8, **NO_STABILITY
    )
    wf = workflow_from_settings(settings, n_nodes=10, seed=1, total_budget=10_000)
    judge = judge_for(10)
    gen = np.random.default_rng(0)
    seen_audit = False
    for wave in range(1, 40):
        pairs = wf.plan_wave()
        assert len(wf.wave_modes) == len(pairs)
        audits = [p for p, m in zip(pairs, wf.wave_modes, strict=True) if m is Mode.AUDIT]
        main = [p for p, m in zip(pairs, wf.wave_modes, strict=True) if m is not Mode.AUDIT]
        assert wf.wave_modes == [wf.mode] * len(main) + [Mode.AUDIT] * len(audits)
        assert main  # audits never replace the whole wave
        assert len({p.edge for p in pairs}) == len(pairs)
        if wf.mode is Mode.RESAMPLING:
            assert not {p.edge for p in audits} & wf.pass_remaining
        seen_audit |= bool(audits)
        for p, m in zip(pairs, wf.wave_modes, strict=True):
            wf.count_call()
            wf.record_success(p.a, p.b, judge.judge(p.a, p.b, gen) or "A", m.value)
        if wf.end_wave(wave, [(p.a, p.b) for p in pairs]).decision.is_final:
            break
    assert seen_audit


def test_no_audits_by_default() -> None:
    res = run_harness(judge_for(10), Settings(**NO_STABILITY), total_budget=120, seed=8)
    assert res.workflow is not None and "audit" not in res.workflow.modes


# --------------------------------------------------------------------------- adaptive runs


def replay(wf: WorkflowState, settings: Settings, **kwargs: Any) -> WorkflowState:
    """A fresh state rebuilt from the settings and what a store keeps, as the executor
    does on resume (services/workflow_setup.py)."""
    stored = {
        "current_mode": wf.mode.value,
        "iteration": wf.waves_completed,
        "resampling_pass_count": wf.pass_count,
        "pass_remaining": sorted([a, b] for a, b in wf.pass_remaining),
    }
    again = workflow_from_settings(
        settings,
        n_nodes=wf.n_nodes,
        seed=wf.seed,
        total_budget=wf.total_budget,
        stored=stored,
        **kwargs,
    )
    order = np.argsort(wf.keys)[::-1]  # answers may come back in any order
    for i in order:
        winner = "A" if wf.first_won[i] else "B"
        again.record_success(wf.first[i], wf.second[i], winner, wf.modes[i], key=wf.keys[i])
    again.calls_sent = wf.calls_sent
    again.scores = np.array(wf.scores)
    again.have_fit = wf.have_fit
    return again


@pytest.mark.parametrize("strategy", ["infogain", "grade_boundary"])
def test_adaptive_selection_is_the_same_after_a_resume(strategy: str) -> None:
    anchors = {10: 0, 11: 1, 12: 2}
    settings = Settings(MATCHING_STRATEGY=strategy, AUDIT_SHARE=0.1, **NO_STABILITY)
    extra = {"anchor_grades": anchors, "n_grades": 3}
    res = run_harness(
        judge_for(13), settings, total_budget=60, seed=9, anchor_grades=anchors, n_grades=3
    )
    wf = res.workflow
    assert wf is not None
    wf.total_budget = 200
    again = replay(wf, settings, **extra)
    assert again.plan_wave() == wf.plan_wave()
    assert again.wave_modes == wf.wave_modes


def test_grade_boundary_weights_are_used_with_anchors() -> None:
    anchors = {20: 0, 21: 1, 22: 2, 23: 3}
    settings = Settings(MATCHING_STRATEGY="grade_boundary", **NO_STABILITY)
    truth = np.array(judge_for(24).true_scores)
    truth[20:] = [-2.0, -0.7, 0.7, 2.0]  # anchors in grade order
    res = run_harness(
        SimulatedJudge(truth),
        settings,
        total_budget=150,
        seed=10,
        anchor_grades=anchors,
        n_grades=4,
    )
    wf = res.workflow
    assert wf is not None and res.comparisons == 150
    eb = wf.posterior()
    weights = wf._grade_uncertainty(np.asarray(eb.fit.scores), np.asarray(eb.fit.se))
    assert weights is not None and weights.shape == (24,)
    # accuracy over the students only
    assert -1 <= res.spearman <= 1


def test_infogain_beats_random_on_the_same_nets() -> None:
    gains = []
    for seed in range(3):
        judge = judge_for(40, seed=seed, bias=0.02)
        runs = {
            s: run_harness(
                judge, Settings(MATCHING_STRATEGY=s, **NO_STABILITY), total_budget=240, seed=seed
            )
            for s in ("random", "infogain")
        }
        gains.append(runs["infogain"].spearman - runs["random"].spearman)
    assert float(np.mean(gains)) > 0


def test_oracle_pairs_on_the_given_scores() -> None:
    judge = judge_for(12, seed=11)
    settings = Settings(MATCHING_STRATEGY="swiss", **NO_STABILITY)
    res = run_harness(judge, settings, total_budget=6, seed=1, selection_scores=judge.true_scores)
    rank = np.argsort(np.argsort(judge.true_scores))
    wf = res.workflow
    assert wf is not None
    first = (wf.first[0], wf.second[0])
    assert abs(int(rank[first[0]]) - int(rank[first[1]])) == 1


def test_latent_sd_gives_the_asked_accuracy() -> None:
    sd = latent_sd_for_accuracy(0.8, samples=50_000)
    gen = np.random.default_rng(1)
    diff = np.abs(gen.normal(0, sd, 200_000) - gen.normal(0, sd, 200_000))
    assert float(np.mean(1 / (1 + np.exp(-diff)))) == pytest.approx(0.8, abs=0.01)


# --------------------------------------------------------------------------- benchmark


def test_crossing_interpolates_and_reports_never() -> None:
    assert bench.crossing([1, 2, 3], [0.5, 0.8, 1.0], 0.9) == pytest.approx(2.5)
    assert bench.crossing([1, 2], [0.95, 0.99], 0.9) == 1
    assert bench.crossing([1, 2], [0.1, 0.2], 0.9) is None


def test_benchmark_small_run(tmp_path: Any) -> None:
    args = bench.parse_args(
        [
            "--sizes",
            "8",
            "--accuracies",
            "0.8",
            "--methods",
            "random,infogain,oracle",
            "--replicates",
            "2",
            "--max-cpe",
            "12",
            "--stop-size",
            "8",
            "--stop-replicates",
            "2",
            "--stop-max-cpe",
            "20",
            "--workers",
            "1",
            "--json",
            str(tmp_path / "out.json"),
            "--markdown",
            str(tmp_path / "out.md"),
        ]
    )
    out = bench.run(args)
    cells = {c["method"]: c for c in out["summary"]["cells"]}
    assert set(cells) == {"random", "infogain", "oracle"}
    assert cells["random"]["ratio_spearman90_vs_random"] in (1.0, None)
    assert cells["oracle"]["replicates"] == 2
    assert "grade_agreement_at_12" in cells["random"]
    stops = {s["method"]: s for s in out["summary"]["stop_check"]}
    assert set(stops) == set(cells) - {"oracle"}  # its design depends on the truth
    assert stops["random"]["replicates"] == 2
    table = bench.markdown(out["summary"], 12, 8)
    assert table.count("| 8 | 0.80 |") == 3 and "Stop check" in table
    # the same seed gives the same figures
    again = bench.run(args)
    assert again["summary"] == out["summary"]
