"""Anchor draws in grade order (rule 3a): every draw keeps the known grades' order, and the
Gibbs sampler's draws follow the exact truncated normal (oracles: scipy's truncnorm, and
rejection sampling from the unrestricted normal)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cj_runner.core.grade_draws import in_grade_order, ordered_anchor_draws, truncated_normal
from cj_runner.core.projection import drawn_boundaries


@given(st.integers(0, 2**32 - 1), st.integers(2, 7), st.integers(2, 4))
@settings(max_examples=40, deadline=None)
def test_every_draw_keeps_the_grades_in_order(seed: int, k: int, n_grades: int) -> None:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.integers(0, n_grades, k)).astype(float)
    if np.unique(idx).size < 2:
        idx[-1] = idx[0] + 1
    root = rng.normal(size=(k, k + 2))
    cov = root @ root.T / (k + 2) * rng.uniform(0.05, 2.0)
    mean = rng.normal(0.0, 2.0, k)  # often far out of grade order
    x = ordered_anchor_draws(mean, cov, idx, np.random.default_rng(seed), 200, sweeps=5)
    assert x.shape == (k, 200) and np.all(np.isfinite(x))
    assert in_grade_order(x, idx).all()
    again = ordered_anchor_draws(mean, cov, idx, np.random.default_rng(seed), 200, sweeps=5)
    np.testing.assert_array_equal(x, again)


@given(
    st.floats(-40.0, 40.0),
    st.floats(0.01, 10.0),
    st.floats(-40.0, 40.0),
    st.floats(0.0, 30.0),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=100, deadline=None)
def test_truncated_normal_stays_in_its_interval(
    mu: float, sd: float, lo: float, width: float, seed: int
) -> None:
    hi = lo + width
    z = truncated_normal(
        np.full(50, mu), sd, np.full(50, lo), np.full(50, hi), np.random.default_rng(seed)
    )
    assert np.all(np.isfinite(z)) and np.all(z >= lo) and np.all(z <= hi)


def _close(draws: np.ndarray, mean: float, sd: float) -> None:
    se = sd / math.sqrt(draws.size)
    assert abs(float(draws.mean()) - mean) < 5 * se + 1e-3
    assert abs(float(draws.std()) - sd) < 0.05 * sd


def test_two_anchors_in_the_wrong_order_follow_the_exact_truncated_normal() -> None:
    # Grade-0 anchor's posterior centred 3 SDs above the grade-1 anchor's. With equal
    # independent variances the difference d = x1 - x0 is N(-3, 2) truncated to d >= 0 and
    # the sum keeps its N(0, 2), independent of d.
    mean, cov, idx = np.array([1.5, -1.5]), np.eye(2), np.array([0.0, 1.0])
    x = ordered_anchor_draws(mean, cov, idx, np.random.default_rng(5), 40_000)
    d, total = x[1] - x[0], x[1] + x[0]
    exact = stats.truncnorm(a=3.0 / math.sqrt(2.0), b=np.inf, loc=-3.0, scale=math.sqrt(2.0))
    _close(d, float(exact.mean()), float(exact.std()))
    _close(total, 0.0, math.sqrt(2.0))


def test_correlated_anchors_match_rejection_sampling() -> None:
    # Three anchors, grades 0, 1, 1 (the two grade-1 anchors unordered between themselves),
    # correlated and often reversed: the accepted unrestricted draws are exact.
    mean = np.array([0.4, 0.0, 0.9])
    cov = np.array([[1.0, 0.5, 0.3], [0.5, 0.8, 0.2], [0.3, 0.2, 0.6]])
    idx = np.array([0.0, 1.0, 1.0])
    raw = np.random.default_rng(7).multivariate_normal(mean, cov, 400_000).T
    exact = raw[:, in_grade_order(raw, idx)]
    assert 0.1 < exact.shape[1] / raw.shape[1] < 0.6
    x = ordered_anchor_draws(mean, cov, idx, np.random.default_rng(8), 40_000)
    for i in range(3):
        _close(x[i], float(exact[i].mean()), float(exact[i].std()))
    np.testing.assert_allclose(np.corrcoef(x), np.corrcoef(exact), atol=0.03)


def test_drawn_boundaries_in_grade_order_never_pool_reversed_anchors() -> None:
    # Two anchors a grade, posteriors overlapping: unrestricted draws come out reversed
    # often; in grade order every draw's boundary lies between the grades' anchors.
    mean = np.array([-0.5, -0.2, 0.2, 0.5])
    cov = np.eye(4) * 0.5
    idx = np.array([0.0, 0.0, 1.0, 1.0])
    ordered = drawn_boundaries(mean, cov, idx, 2, np.random.default_rng(3), 2000)
    loose = drawn_boundaries(mean, cov, idx, 2, np.random.default_rng(3), 2000, grade_order=False)
    assert ordered is not None and loose is not None
    x, cuts = ordered
    assert x.shape[1] == 2000
    assert np.all(cuts[:, 0] >= x[:2].max(axis=0)) and np.all(cuts[:, 0] <= x[2:].min(axis=0))
    assert not in_grade_order(loose[0], idx).all()
