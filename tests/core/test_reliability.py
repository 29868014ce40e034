"""Reliability: SSR, infit/outfit, misfit flags and the position-A win share."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cj_runner.core.bt import fit_bt
from cj_runner.core.reliability import (
    MISFIT_THRESHOLD,
    Proportion,
    flag_misfits,
    infit_outfit,
    infit_outfit_by_group,
    position_a_win_share,
    scale_separation_reliability,
    wilson_interval,
)


def simulate(
    rng: np.random.Generator, true: NDArray[np.float64], m: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
    n = true.size
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    return a, b, rng.random(m) < 1.0 / (1.0 + np.exp(-(true[a] - true[b])))


# ------------------------------------------------------------------------------- SSR


def test_ssr_formula() -> None:
    scores = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # sample variance 2.5
    se = np.array([0.5, 0.5, 0.5, 0.5, 1.0])  # mean square 0.4
    assert scale_separation_reliability(scores, se) == pytest.approx((2.5 - 0.4) / 2.5)


def test_ssr_degenerate_cases() -> None:
    assert math.isnan(scale_separation_reliability([1.0], [0.1]))
    assert math.isnan(scale_separation_reliability([1.0, 1.0], [0.1, 0.1]))
    assert scale_separation_reliability([-0.1, 0.1], [1.0, 1.0]) < 0  # all noise
    with pytest.raises(ValueError):
        scale_separation_reliability([1.0, 2.0], [0.1])
    with pytest.raises(ValueError):
        scale_separation_reliability([1.0, np.nan], [0.1, 0.1])


def test_ssr_rises_with_more_comparisons() -> None:
    rng = np.random.default_rng(3)
    n = 60
    true = rng.normal(0, 1.5, n)
    a, b, y = simulate(rng, true, 60 * 40 // 2)
    values = []
    for m in (300, 600, 1200):
        fit = fit_bt(n, a[:m], b[:m], y[:m])
        assert fit.se is not None
        values.append(scale_separation_reliability(fit.scores, fit.se))
    assert values[0] < values[1] < values[2] < 1


def test_ssr_estimates_the_squared_correlation_with_the_truth() -> None:
    """SSR = var(true) / var(estimate), which is corr(true, estimate)^2 on average."""
    ssr, r2 = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        true = rng.normal(0, 1.5, 60)
        a, b, y = simulate(rng, true, 60 * 40 // 2)
        fit = fit_bt(60, a, b, y)
        assert fit.se is not None
        ssr.append(scale_separation_reliability(fit.scores, fit.se))
        r2.append(np.corrcoef(true, fit.scores)[0, 1] ** 2)
    assert np.mean(ssr) == pytest.approx(np.mean(r2), abs=0.03)


# ---------------------------------------------------------------------- infit/outfit


def test_infit_outfit_by_hand() -> None:
    scores = np.array([0.0, np.log(3.0), 0.0])  # P(1 beats 0) = 0.75
    first = [1, 0]
    second = [0, 2]
    won = [True, False]  # node 1 won as expected; node 0 lost to an equal node 2
    infit, outfit = infit_outfit(3, first, second, won, scores)
    # comparison 1: p = 0.75, y = 1 -> residual^2 = 1/16, W = 3/16, z^2 = 1/3
    # comparison 2: p = 0.5,  y = 0 -> residual^2 = 1/4,  W = 1/4,  z^2 = 1
    assert outfit[1] == pytest.approx(1 / 3)
    assert infit[1] == pytest.approx(1 / 3)
    assert outfit[0] == pytest.approx((1 / 3 + 1) / 2)
    assert infit[0] == pytest.approx((1 / 16 + 1 / 4) / (3 / 16 + 1 / 4))
    assert outfit[2] == pytest.approx(1.0) and infit[2] == pytest.approx(1.0)


def test_order_effect_enters_the_expectation() -> None:
    scores = np.zeros(2)
    # with eta = log 3, A wins with probability 0.75
    infit, outfit = infit_outfit(2, [0], [1], [True], scores, order_effect=float(np.log(3.0)))
    assert outfit[0] == pytest.approx(1 / 3) and infit[1] == pytest.approx(1 / 3)


def test_nodes_without_comparisons_get_nan() -> None:
    infit, outfit = infit_outfit(4, [0, 1], [1, 0], [True, False], np.zeros(4))
    assert np.isnan(infit[2:]).all() and np.isnan(outfit[2:]).all()
    assert not flag_misfits(infit, outfit)[2:].any()


def test_infit_is_about_one_under_the_model() -> None:
    means = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        a, b, y = simulate(rng, rng.normal(0, 2.0, 40), 40 * 60 // 2)
        fit = fit_bt(40, a, b, y)
        infit, _ = infit_outfit(40, a, b, y, fit.scores)
        means.append(infit.mean())
    assert np.mean(means) == pytest.approx(1.0, abs=0.05)


def test_an_erratic_node_misfits() -> None:
    rng = np.random.default_rng(17)
    n = 40
    a, b, y = simulate(rng, rng.normal(0, 2.0, n), n * 60 // 2)
    erratic = 0
    # node 0's outcomes are the opposite of what its quality predicts
    y = np.where((a == erratic) | (b == erratic), ~y, y)
    fit = fit_bt(n, a, b, y)
    infit, outfit = infit_outfit(n, a, b, y, fit.scores)
    assert flag_misfits(infit, outfit)[erratic]
    assert infit[erratic] == infit.max() > 1.5 * MISFIT_THRESHOLD
    assert outfit[erratic] > MISFIT_THRESHOLD


def test_erratic_judge_has_the_larger_infit() -> None:
    rng = np.random.default_rng(5)
    n = 30
    true = rng.normal(0, 2.0, n)
    a, b, y = simulate(rng, true, 1500)
    judge = (rng.random(a.size) < 0.2).astype(int)
    y = np.where(judge == 1, ~y, y)  # judge 1 (a fifth of the comparisons) picks backwards
    fit = fit_bt(n, a, b, y)
    infit, outfit = infit_outfit_by_group(3, judge, a, b, y, fit.scores)
    assert infit[1] > MISFIT_THRESHOLD > infit[0]
    assert outfit[1] > outfit[0]
    assert np.isnan(infit[2]) and np.isnan(outfit[2])  # judge 2 made no comparisons


def test_infit_outfit_validate_input() -> None:
    with pytest.raises(ValueError):
        infit_outfit(2, [0], [1], [True], np.zeros(3))
    with pytest.raises(ValueError):
        infit_outfit(2, [0], [2], [True], np.zeros(2))
    with pytest.raises(ValueError):
        infit_outfit_by_group(1, [1], [0], [1], [True], np.zeros(2))


def test_flag_misfits() -> None:
    flags = flag_misfits([0.5, 1.4, 1.0, np.nan], [1.0, 1.0, 1.31, np.nan])
    assert flags.tolist() == [False, True, True, False]
    assert flag_misfits([1.2], [1.2], threshold=1.1).tolist() == [True]


# -------------------------------------------------------------- position-A win share


def test_wilson_interval_known_values() -> None:
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662
    p = wilson_interval(81, 263)
    assert (p.low, p.high) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    p = wilson_interval(0, 10)
    assert p.low == 0.0 and p.high == pytest.approx(0.2775, abs=1e-4)
    empty = wilson_interval(0, 0)
    assert math.isnan(empty.share) and (empty.low, empty.high, empty.n) == (0.0, 1.0, 0)


@settings(deadline=None, max_examples=100)
@given(n=st.integers(1, 10_000), data=st.data())
def test_wilson_interval_contains_the_share(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    p = wilson_interval(k, n)
    assert 0.0 <= p.low <= p.share <= p.high <= 1.0
    mirror = wilson_interval(n - k, n)
    assert mirror.low == pytest.approx(1 - p.high, abs=1e-12)


def test_position_a_win_share() -> None:
    share = position_a_win_share([True, True, True, False])
    assert share == Proportion(share=0.75, low=share.low, high=share.high, n=4)
    assert share.low < 0.5 < share.high  # four comparisons prove nothing
    biased = position_a_win_share(np.arange(1000) % 10 < 6)
    assert biased.share == pytest.approx(0.6) and biased.low > 0.5
    assert math.isnan(position_a_win_share([]).share)
    with pytest.raises(ValueError):
        position_a_win_share([2])
