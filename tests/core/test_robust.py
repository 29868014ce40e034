"""The design-robust reliability (issue 8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.core.bt import fit_bt
from cj_runner.core.robust import (
    METHODS,
    empirical_bayes_fit,
    robust_reliability,
    spearman_brown,
)


def simulate(
    n: int, m: int, sd: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m`` uniformly random comparisons of ``n`` nodes with N(0, sd^2) qualities."""
    gen = np.random.default_rng(seed)
    truth = gen.normal(0, sd, n)
    first = gen.integers(0, n, m)
    second = (first + gen.integers(1, n, m)) % n
    won = gen.random(m) < 1 / (1 + np.exp(-(truth[first] - truth[second])))
    return truth, first, second, won


def true_r2(
    n: int, first: np.ndarray, second: np.ndarray, won: np.ndarray, truth: np.ndarray
) -> float:
    scores = np.asarray(fit_bt(n, first, second, won, compute_se=False).scores)
    return float(np.corrcoef(scores, truth)[0, 1] ** 2)


def test_spearman_brown() -> None:
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.6, 3) == pytest.approx(1.8 / 2.2)
    assert spearman_brown(1.0) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_posterior_reliability_tracks_the_truth_under_a_random_design(seed: int) -> None:
    n = 60
    truth, first, second, won = simulate(n, 420, 1.6, seed)
    result = robust_reliability(n, first, second, won)
    assert result.method == "posterior"
    assert result.value is not None
    sd = result.detail["posterior_sd"]
    assert 0 < sd < 0.1
    # the realised correlation is one draw from the posterior: within 3 of its SDs
    assert abs(result.value - true_r2(n, first, second, won, truth)) < 3 * sd
    assert math.isfinite(result.detail["ssr"])


def test_split_half_is_available_and_sensible() -> None:
    n = 60
    truth, first, second, won = simulate(n, 600, 1.6, 7)
    result = robust_reliability(n, first, second, won, method="split_half", splits=6)
    assert result.method == "split_half"
    assert result.detail["splits"] == 6
    assert result.value is not None
    assert abs(result.value - true_r2(n, first, second, won, truth)) < 0.15


def test_more_comparisons_more_reliability() -> None:
    n = 40
    _, first, second, won = simulate(n, 1200, 1.6, 2)
    few = robust_reliability(n, first[:200], second[:200], won[:200]).value
    many = robust_reliability(n, first, second, won).value
    assert few is not None and many is not None
    assert many > few + 0.1


def test_empirical_bayes_recovers_the_spread() -> None:
    n = 80
    _, first, second, won = simulate(n, 2400, 1.5, 3)
    eb = empirical_bayes_fit(n, first, second, won)
    assert 1.2 < eb.prior_sd < 1.9
    assert 0 < eb.log_prior_sd_se < 0.2
    assert eb.fit.covariance is not None


def test_no_signal_gives_a_small_spread() -> None:
    n = 40
    gen = np.random.default_rng(5)
    first = gen.integers(0, n, 800)
    second = (first + gen.integers(1, n, 800)) % n
    coin = gen.random(800) < 0.5
    eb = empirical_bayes_fit(n, first, second, coin)
    result = robust_reliability(n, first, second, coin)
    assert eb.prior_sd < 0.5
    assert result.value is not None and result.value < 0.4


def test_nodes_restrict_the_correlation() -> None:
    n = 30
    _, first, second, won = simulate(n, 300, 1.6, 9)
    everyone = robust_reliability(n, first, second, won)
    some = robust_reliability(n, first, second, won, nodes=list(range(20)))
    assert everyone.value is not None and some.value is not None
    assert everyone.value != some.value


def test_seeded_and_reusing_the_posterior_changes_nothing() -> None:
    n = 25
    _, first, second, won = simulate(n, 200, 1.6, 4)
    one = robust_reliability(n, first, second, won, seed=3)
    again = robust_reliability(n, first, second, won, seed=3)
    reused = robust_reliability(
        n, first, second, won, seed=3, posterior=empirical_bayes_fit(n, first, second, won)
    )
    assert one == again or one.value == again.value
    assert reused.value == pytest.approx(one.value)


def test_audits_report_their_agreement() -> None:
    n = 30
    _, first, second, won = simulate(n, 300, 1.6, 6)
    modes = ["coverage"] * 270 + ["audit"] * 30
    result = robust_reliability(n, first, second, won, modes=modes)
    assert result.detail["audit_n"] == 30
    assert 0 <= result.detail["audit_agreement"] <= 1
    assert 0.5 <= result.detail["audit_expected_agreement"] <= 1
    with pytest.raises(ValueError, match="one entry per comparison"):
        robust_reliability(n, first, second, won, modes=["audit"])


def test_too_little_data_and_bad_methods() -> None:
    assert robust_reliability(2, [0], [1], [True]).value is None
    assert robust_reliability(5, [0], [1], [True]).value is None
    with pytest.raises(ValueError, match="unknown reliability method"):
        robust_reliability(5, [0, 1], [1, 2], [True, False], method="alpha")
    assert set(METHODS) == {"posterior", "split_half"}


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(METHODS))
def test_value_is_a_reliability_and_relabelling_invariant(seed: int, method: str) -> None:
    n = 15
    _, first, second, won = simulate(n, 90, 1.5, seed)
    result = robust_reliability(n, first, second, won, method=method, seed=1, splits=4)
    if result.value is None:
        return
    assert result.value <= 1.0
    if method == "posterior":
        assert result.value >= 0.0
        perm = np.random.default_rng(seed).permutation(n)
        relabelled = robust_reliability(n, perm[first], perm[second], won, seed=1)
        assert relabelled.value is not None
        # the same posterior; only the Monte Carlo draws differ
        assert math.isclose(relabelled.value, result.value, abs_tol=0.03)
