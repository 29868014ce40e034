"""``benchmarks/bench_target_stop.py`` applies each stop rule to one trajectory run without
a target; these tests check that this is the batch the product runs with the target: the
same stop, the same comparisons, the same true reliability."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks import bench_target_stop as bench
from cj_runner.config import Settings
from cj_runner.core.bt import fit_bt
from cj_runner.core.continuation import TARGET_RELIABILITY_Z
from cj_runner.services.harness import SimulatedJudge, run_harness
from cj_runner.services.workflow_setup import workflow_from_settings

N, CAP, TARGET = 30, 24, 0.8


@pytest.mark.parametrize(("strategy", "rep"), [("infogain", 1), ("random", 2), ("balanced", 0)])
@pytest.mark.parametrize(("rule", "z"), [("point", 0.0), ("z=1.645", TARGET_RELIABILITY_Z)])
def test_a_rule_on_the_trajectory_is_the_live_stop(
    strategy: str, rep: int, rule: str, z: float
) -> None:
    assert z == bench.Z_OF_RULE[rule]
    waves = bench.trajectory(N, strategy, rep, CAP, 0.0, TARGET, [rule])
    settings = Settings(
        MAX_PAIRWISE_COMPARISONS=N * CAP // 2,
        SCORE_STABILITY_THRESHOLD=0.0,
        MAX_ITERATIONS=1_000_000,
        SEED=rep,
        MATCHING_STRATEGY=strategy,
        TARGET_RELIABILITY=TARGET,
    )
    wf = workflow_from_settings(settings, n_nodes=N, seed=rep)
    wf.limits = replace(wf.limits, target_reliability_z=z)
    truth = np.random.default_rng([rep, 7]).standard_normal(N) * bench.TRUE_SD
    live = run_harness(SimulatedJudge(truth), settings, seed=rep, workflow=wf)
    stop, on_rule = bench.stop(
        waves, bench.RULES[rule], TARGET, settings.MIN_COMPARISONS_FOR_STABILITY_CHECK
    )
    assert live.stop_reason == ("target_reliability" if on_rule else "budget")
    assert live.comparisons == stop.comparisons
    last = live.history[-1]
    assert (last.robust_reliability, last.robust_reliability_sd) == (stop.robust, stop.sd)
    assert live.workflow is not None
    first, second, won = live.workflow.comparison_arrays()
    reported = fit_bt(N, first, second, won, prior_precision=settings.BT_PRIOR_PRECISION)
    true = float(np.corrcoef(reported.scores, truth - truth.mean())[0, 1] ** 2)
    assert true == pytest.approx(stop.true, abs=1e-12)
