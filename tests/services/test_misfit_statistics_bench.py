"""The per-node tests of ``benchmarks/bench_misfit_statistics.py`` (docs/statistics.md,
"Per-node calibrated tests"): the exact conditional test against enumeration under the
Bradley-Terry model itself, and the Neyman-Pearson bound at its two ends."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import bench_misfit_statistics as bench


def _enumerated_p(delta: np.ndarray, won: np.ndarray, theta: float) -> float:
    """P(T >= T_obs | r) by listing every outcome vector with r wins, weighted by the
    Bradley-Terry likelihood of a node of score ``theta``."""
    p = scipy.special.expit(theta - delta)
    r = int(won.sum())
    observed = float(np.sum(won * delta))
    total = above = 0.0
    for chosen in itertools.combinations(range(delta.size), r):
        y = np.zeros(delta.size)
        y[list(chosen)] = 1.0
        weight = float(np.prod(np.where(y > 0, p, 1.0 - p)))
        total += weight
        if float(np.sum(y * delta)) >= observed - 1e-9:
            above += weight
    return above / total


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(-150, 150), min_size=2, max_size=9),
    wins=st.lists(st.booleans(), min_size=9, max_size=9),
    theta=st.floats(-3.0, 3.0),
)
def test_the_conditional_test_is_exact_and_free_of_the_nodes_score(
    steps: list[int], wins: list[bool], theta: float
) -> None:
    # opponent scores on the test's own grid, so that its binning is exact
    delta = np.asarray(steps, dtype=np.float64) * bench.GRID
    won = np.asarray(wins[: delta.size], dtype=np.float64)
    got = bench.conditional_p(delta, won)
    if won.sum() in (0, delta.size):
        assert got == 1.0
        return
    assert abs(got - _enumerated_p(delta, won, theta)) < 1e-9
    assert abs(got - _enumerated_p(delta, won, -theta + 1.0)) < 1e-9


def test_a_coin_against_spread_opponents_gets_a_small_p_value() -> None:
    delta = np.linspace(-4.0, 4.0, 20)
    won = (delta > 0).astype(np.float64)  # beat every strong opponent, lost to every weak one
    assert bench.conditional_p(delta, won) < 1e-6
    assert bench.conditional_p(delta, 1.0 - won) > 1 - 1e-9  # the model's own order


def test_the_bound_has_no_power_without_spread_and_much_with_it() -> None:
    rng = np.random.default_rng(0)
    # every opponent at one level: the closest model node is a coin, nothing tells them apart
    assert bench.neyman_pearson_bound(np.zeros(20), rng) <= 0.05
    assert bench.neyman_pearson_bound(np.linspace(-5.0, 5.0, 20), rng) > 0.95
