"""``ANCHOR_WEIGHT``: the anchors get about K times the comparisons of a student, in the
same total budget (issue 13: narrower grade boundaries for everyone)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from cj_runner.config import Settings
from cj_runner.core.workflow import WorkflowState
from cj_runner.services.harness import SimulatedJudge, run_harness

# check pairs off: their opponents are chosen by rank, not weighted, so they would dilute
# the ratio the weight sets for the main pairs (measured: 2.3 instead of about 3 at K = 3)
NO_STABILITY: dict[str, Any] = {
    "SCORE_STABILITY_THRESHOLD": 0.0,
    "MAX_ITERATIONS": 100_000,
    "MISFIT_CHECK_SHARE": 0.0,
}


def _run(
    strategy: str, weight: float, *, students: int, budget: int, seed: int
) -> tuple[WorkflowState, list[int]]:
    """A harness batch of ``students`` + 4 anchors (one per grade) under ``weight``."""
    truth = np.random.default_rng([seed, 7]).normal(0, 1.6, students + 4)
    anchors = {students + k: k for k in range(4)}
    settings = Settings(MATCHING_STRATEGY=strategy, ANCHOR_WEIGHT=weight, **NO_STABILITY)
    res = run_harness(
        SimulatedJudge(truth),
        settings,
        total_budget=budget,
        seed=seed,
        anchor_grades=anchors,
        n_grades=4,
    )
    assert res.workflow is not None
    return res.workflow, sorted(anchors)


def _ratio(wf: WorkflowState, anchors: list[int]) -> float:
    """Mean comparisons of an anchor over the mean of a student."""
    counts = wf.a_counts + wf.b_counts
    mask = np.zeros(wf.n_nodes, dtype=bool)
    mask[anchors] = True
    return float(counts[mask].mean() / counts[~mask].mean())


@pytest.mark.parametrize("weight", [2.0, 3.0])
def test_random_draws_an_anchor_about_weight_times_as_often(weight: float) -> None:
    # 100 students, ~6 comparisons each: few anchor edges are used up, so the edge
    # weights (product of the node weights) give about K times the comparisons
    ratios = []
    for seed in range(3):
        wf, anchors = _run("random", weight, students=100, budget=312, seed=seed)
        assert wf.calls_sent == 312  # the same total budget
        ratios.append(_ratio(wf, anchors))
    assert weight * 0.8 <= float(np.mean(ratios)) <= weight * 1.1
    base = [_ratio(*_run("random", 1.0, students=100, budget=312, seed=s)) for s in range(3)]
    assert 0.7 <= float(np.mean(base)) <= 1.3


def test_weight_one_is_the_selection_of_before() -> None:
    # ANCHOR_WEIGHT=1 takes the unweighted path: the same batch, call for call, as the
    # same settings without anchors' weights (node_weight None)
    wf, _ = _run("random", 1.0, students=30, budget=120, seed=4)
    assert wf.node_weight() is None
    truth = np.random.default_rng([4, 7]).normal(0, 1.6, 34)
    plain = run_harness(
        SimulatedJudge(truth),
        Settings(MATCHING_STRATEGY="random", **NO_STABILITY),
        total_budget=120,
        seed=4,
        anchor_grades={30 + k: k for k in range(4)},
        n_grades=4,
    ).workflow
    assert plain is not None
    assert (wf.first, wf.second, wf.first_won) == (plain.first, plain.second, plain.first_won)


@pytest.mark.parametrize("strategy", ["infogain", "grade_boundary"])
def test_adaptive_strategies_give_weighted_anchors_more_comparisons(strategy: str) -> None:
    one, anchors = _run(strategy, 1.0, students=40, budget=264, seed=1)
    three, _ = _run(strategy, 3.0, students=40, budget=264, seed=1)
    assert three.calls_sent == one.calls_sent == 264
    assert _ratio(three, anchors) >= 1.5 * _ratio(one, anchors)
    assert _ratio(three, anchors) >= 1.7


def test_node_weight_marks_only_the_graded_anchors() -> None:
    wf, anchors = _run("random", 2.0, students=6, budget=1, seed=0)
    weight = wf.node_weight()
    assert weight is not None
    assert weight.tolist() == [1.0] * 6 + [2.0] * 4
    assert anchors == [6, 7, 8, 9]


@pytest.mark.parametrize("value", [0.5, 0.0, -1.0, 11.0, float("nan"), float("inf")])
def test_settings_refuse_weights_out_of_range(value: float) -> None:
    with pytest.raises(ValidationError, match="ANCHOR_WEIGHT"):
        Settings(ANCHOR_WEIGHT=value)
