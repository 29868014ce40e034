"""Judge health: the pure verdict (position, order flips, chance) and its thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from cj_runner.core.bt import fit_bt
from cj_runner.core.health import (
    NO_SIGNAL,
    OK,
    judge_health,
    null_likelihood_ratio_p,
)


@pytest.mark.parametrize(
    ("a_wins", "n", "status"),
    [
        (20, 20, NO_SIGNAL),  # Wilson low 0.84
        (8, 8, OK),  # too few calls: low 0.68
        (55, 60, NO_SIGNAL),  # share 0.92, low 0.82
        (52, 60, NO_SIGNAL),  # share 0.867, low 0.755
        (51, 60, OK),  # share 0.85: not above the limit
        (0, 30, NO_SIGNAL),  # always B
        (30, 60, OK),
        (0, 0, OK),
    ],
)
def test_position_rule(a_wins: int, n: int, status: str) -> None:
    health = judge_health(position_a_wins=a_wins, comparisons=n)
    assert health.status == status
    if status == NO_SIGNAL:
        assert "picked position" in health.reasons[0]


def test_flip_rule_needs_enough_edges_and_evidence() -> None:
    ok = {"position_a_wins": 30, "comparisons": 60}
    assert judge_health(**ok, flip_rate=1.0, flip_edges=4).status == OK  # too few edges
    assert judge_health(**ok, flip_rate=1.0, flip_edges=5).status == NO_SIGNAL
    assert judge_health(**ok, flip_rate=0.79, flip_edges=200).status == OK  # below the limit
    assert judge_health(**ok, flip_rate=0.5, flip_edges=100).status == OK  # a coin-tosser
    flagged = judge_health(**ok, flip_rate=0.9, flip_edges=40)
    assert flagged.status == NO_SIGNAL and "changed with the order" in flagged.reasons[0]


def test_chance_rule_needs_no_evidence_and_low_reliability() -> None:
    ok = {"position_a_wins": 30, "comparisons": 60}
    assert judge_health(**ok, null_p_value=0.01, robust_reliability=0.05).status == OK
    assert judge_health(**ok, null_p_value=0.5, robust_reliability=0.6).status == OK
    chance = judge_health(**ok, null_p_value=0.5, robust_reliability=0.1)
    assert chance.status == NO_SIGNAL and "p = 0.50" in chance.reasons[0]
    assert judge_health(**ok, null_p_value=0.5).status == NO_SIGNAL


def test_verdict_json_is_stable() -> None:
    health = judge_health(position_a_wins=60, comparisons=60, flip_rate=1.0, flip_edges=10)
    data = health.as_dict()
    assert list(data) == ["status", "signal", "reasons", "checks"]
    assert data["status"] == "no_signal" and data["signal"] is False and len(data["reasons"]) == 2
    assert data["checks"]["position_a_share"] == 1.0


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        judge_health(position_a_wins=5, comparisons=4)


def _simulate(truth: np.ndarray, m: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = truth.size
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    y = rng.random(m) < scipy.special.expit(truth[a] - truth[b])
    return a, b, y


def test_likelihood_ratio_p_is_uniform_for_a_coin_tossing_judge() -> None:
    n, m = 12, 240
    p_values = []
    for seed in range(60):
        a, b, y = _simulate(np.zeros(n), m, seed)
        fit = fit_bt(n, a, b, y, order_effect=True, prior_precision=0.01)
        p = null_likelihood_ratio_p(fit.log_likelihood, int(y.sum()), m, n - 1)
        assert p is not None
        p_values.append(p)
    assert 0.0 <= np.mean(np.asarray(p_values) < 0.05) <= 0.15
    assert scipy.stats.kstest(p_values, "uniform").pvalue > 0.01


def test_likelihood_ratio_finds_a_real_judge() -> None:
    a, b, y = _simulate(np.linspace(-2, 2, 12), 60, 1)  # 5 comparisons per essay
    fit = fit_bt(12, a, b, y, order_effect=True, prior_precision=0.01)
    p = null_likelihood_ratio_p(fit.log_likelihood, int(y.sum()), 60, 11)
    assert p is not None and p < 0.01


@given(st.integers(0, 50), st.integers(1, 50), st.integers(1, 30))
def test_likelihood_ratio_of_the_null_fit_is_one(k: int, extra: int, df: int) -> None:
    m = k + extra
    null = sum(c * np.log(c / m) for c in (k, m - k) if c > 0)
    assert null_likelihood_ratio_p(float(null), k, m, df) == pytest.approx(1.0)
    assert null_likelihood_ratio_p(float(null), k, m, 0) is None
