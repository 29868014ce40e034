"""Standardised infit/outfit (Wilson-Hilferty ZSTD) and the misfit flag rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.core.reliability import (
    MISFIT_MIN_COMPARISONS,
    MISFIT_Z_THRESHOLD,
    flag_standardized_misfits,
    standardized_fit,
    wilson_hilferty_z,
)


def _one_node(diffs: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node 0 against nodes 1..k, with score differences ``diffs``."""
    scores = np.concatenate([[0.0], -np.asarray(diffs, dtype=float)])
    first = np.zeros(len(diffs), dtype=np.int64)
    second = np.arange(1, len(diffs) + 1, dtype=np.int64)
    return scores, first, second


@pytest.mark.parametrize("diffs", [[0.3, -1.2, 2.0], [2.5, 2.5, -0.4, 1.0]])
def test_model_sd_of_the_mean_squares_is_exact(diffs: list[float]) -> None:
    # enumerate every outcome: the exact variance of infit and outfit under the model
    scores, first, second = _one_node(diffs)
    p = scipy.special.expit(np.asarray(diffs))
    w = p * (1 - p)
    ms_in, ms_out, weight = [], [], []
    for outcome in itertools.product([0.0, 1.0], repeat=len(diffs)):
        y = np.asarray(outcome)
        ms_in.append(float(np.sum((y - p) ** 2) / np.sum(w)))
        ms_out.append(float(np.mean((y - p) ** 2 / w)))
        weight.append(float(np.prod(np.where(y == 1, p, 1 - p))))
    wt = np.asarray(weight)
    var_in = float(np.sum(wt * (np.asarray(ms_in) - 1.0) ** 2))
    var_out = float(np.sum(wt * (np.asarray(ms_out) - 1.0) ** 2))
    # recover q from the statistic: t(MS=1) = q / 3
    stats = standardized_fit(len(scores), first, second, np.ones(len(diffs)), scores)
    assert stats.count[0] == len(diffs)
    q_in = float(np.sqrt(np.sum(w - 4 * w**2)) / np.sum(w))
    q_out = float(np.sqrt(np.sum(1 / w) - 4 * len(diffs)) / len(diffs))
    assert q_in**2 == pytest.approx(var_in)
    assert q_out**2 == pytest.approx(var_out)
    expected_in = wilson_hilferty_z(np.sum((1 - p) ** 2) / np.sum(w), q_in)
    expected_out = wilson_hilferty_z(np.mean((1 - p) ** 2 / w), q_out)
    assert stats.infit_z[0] == pytest.approx(float(expected_in))
    assert stats.outfit_z[0] == pytest.approx(float(expected_out))


def _z_under_the_model(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, m = 24, 240
    truth = rng.standard_normal(n) * 1.5
    zi, zo = [], []
    for _ in range(150):
        a = rng.integers(0, n, m)
        b = (a + rng.integers(1, n, m)) % n
        y = rng.random(m) < scipy.special.expit(truth[a] - truth[b])
        stats = standardized_fit(n, a, b, y, truth)
        zi.append(stats.infit_z)
        zo.append(stats.outfit_z)
    return np.concatenate(zi), np.concatenate(zo)


def _standard_normal(z: np.ndarray) -> None:
    assert abs(z.mean()) < 0.1
    assert 0.9 < z.std() < 1.1
    assert 0.01 < float(np.mean(z > 2.0)) < 0.04


def test_z_is_standard_normal_under_the_model_with_true_scores() -> None:
    infit_z, outfit_z = _z_under_the_model(1)  # true scores from -2.0 to 1.9
    _standard_normal(infit_z)
    _standard_normal(outfit_z)
    # true scores from -3.8 to 5.0: the outfit of the extreme essays is too skewed for the
    # cube root (its ZSTD is biased upwards); the infit stays standard normal
    infit_z, outfit_z = _z_under_the_model(3)
    _standard_normal(infit_z)
    assert outfit_z.mean() > 0.2


def test_coin_tosses_have_no_variance_and_z_zero() -> None:
    scores, first, second = _one_node([0.0, 0.0, 0.0])
    stats = standardized_fit(4, first, second, np.array([1, 0, 1]), scores)
    assert stats.infit[0] == pytest.approx(1.0) and stats.infit_z[0] == 0.0
    assert stats.outfit_z[0] == 0.0


def test_nodes_without_comparisons_are_nan_and_never_flagged() -> None:
    stats = standardized_fit(3, np.array([0]), np.array([1]), np.array([True]), np.zeros(3))
    assert np.isnan(stats.infit_z[2]) and np.isnan(stats.outfit_z[2])
    assert stats.count.tolist() == [1, 1, 0]
    assert not flag_standardized_misfits(stats.infit_z, stats.count, min_comparisons=0)[2]


def test_one_upset_against_a_far_weaker_essay_is_not_a_misfit() -> None:
    # the case: the top essay loses once in 36 to a much weaker one
    diffs = [4.0] * 36
    scores, first, second = _one_node(diffs)
    won = np.ones(36)
    won[0] = 0
    stats = standardized_fit(37, first, second, won, scores)
    assert stats.outfit[0] > 1.3  # the raw mean-square alarms
    assert not flag_standardized_misfits(stats.infit_z, stats.count)[0]


def test_flag_rule_needs_the_threshold_and_enough_comparisons() -> None:
    z = np.array([MISFIT_Z_THRESHOLD + 0.01, MISFIT_Z_THRESHOLD, 5.0, np.nan])
    count = np.array([MISFIT_MIN_COMPARISONS] * 2 + [MISFIT_MIN_COMPARISONS - 1, 50])
    assert flag_standardized_misfits(z, count).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="same shape"):
        flag_standardized_misfits(z, count[:2])


@settings(max_examples=50, deadline=None)
@given(
    st.floats(0.05, 5.0),
    st.floats(0.05, 5.0),
    st.floats(0.01, 3.0),
)
def test_wilson_hilferty_is_increasing_in_the_mean_square(a: float, b: float, q: float) -> None:
    za, zb = wilson_hilferty_z([a, b], [q, q])
    assert (za < zb) == (a < b) or a == b
    assert float(wilson_hilferty_z(1.0, q)) == pytest.approx(q / 3)
