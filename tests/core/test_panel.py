"""Panel scoring: one scale across judges, per-judge order effects, judge misfit, kappa."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cj_runner.core.bt import fit_bt
from cj_runner.core.panel import (
    JUDGE_MISFIT_MIN_COMPARISONS,
    PanelComparisons,
    cohen_kappa,
    consensus_agreement,
    fit_panel,
    flag_judges,
    judge_fit,
    judge_misfit,
    misfit_weights,
    pairwise_kappa,
    position_bias_pp,
    reliability_without,
)
from cj_runner.core.panel_design import panel_member


def simulate(
    rng: np.random.Generator,
    truth: NDArray[np.float64],
    etas: list[float],
    m: int,
    erratic: int | None = None,
) -> PanelComparisons:
    n = truth.size
    j = rng.integers(0, len(etas), m)
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    p = 1.0 / (1.0 + np.exp(-(truth[a] - truth[b] + np.asarray(etas)[j])))
    if erratic is not None:
        p = np.where(j == erratic, 0.5, p)
    return PanelComparisons.of(n, len(etas), j, a, b, rng.random(m) < p)


def reference_objective(x: NDArray[np.float64], data: PanelComparisons, lam: float) -> float:
    """Negative log-posterior written independently of the module (theta, then one eta
    per judge)."""
    n = data.n_items
    theta, eta = x[:n], x[n:]
    d = theta[data.first] - theta[data.second] + eta[data.judge]
    y = data.first_won
    loglik = np.sum(y * -np.logaddexp(0, -d) + (1 - y) * -np.logaddexp(0, d))
    return float(-loglik + 0.5 * lam * np.sum(x**2))


panel_cases = st.tuples(
    st.integers(2, 8),  # nodes
    st.integers(1, 4),  # judges
    st.integers(1, 80),  # comparisons
    st.integers(0, 2**32 - 1),
)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(panel_cases, st.booleans())
def test_one_judge_is_fit_bt(case: tuple[int, int, int, int], order: bool) -> None:
    n, _, m, seed = case
    rng = np.random.default_rng(seed)
    data = simulate(rng, rng.normal(0, 1, n), [0.3], m)
    mine = fit_panel(data, order_effect=order)
    theirs = fit_bt(n, data.first, data.second, data.first_won, order_effect=order)
    assert theirs.se is not None
    np.testing.assert_allclose(mine.scores, theirs.scores, atol=1e-7)
    np.testing.assert_allclose(mine.se, theirs.se, atol=1e-7)
    if order:
        assert theirs.order_effect is not None and theirs.order_effect_se is not None
        assert mine.order_effects[0] == pytest.approx(theirs.order_effect, abs=1e-7)
        assert mine.order_effect_se[0] == pytest.approx(theirs.order_effect_se, abs=1e-7)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(panel_cases)
def test_optimum_matches_an_independent_minimiser(case: tuple[int, int, int, int]) -> None:
    n, judges, m, seed = case
    rng = np.random.default_rng(seed)
    data = simulate(rng, rng.normal(0, 1, n), list(rng.normal(0, 0.5, judges)), m)
    lam = 0.05
    fit = fit_panel(data, prior_precision=lam)
    x0 = np.zeros(n + judges)
    best = scipy.optimize.minimize(
        reference_objective, x0, args=(data, lam), method="BFGS", options={"gtol": 1e-9}
    )
    np.testing.assert_allclose(fit.scores, best.x[:n], atol=1e-4)
    np.testing.assert_allclose(fit.order_effects, best.x[n:], atol=1e-4)
    assert abs(fit.scores.sum()) < 1e-9


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(panel_cases)
def test_relabelling_judges_and_nodes_permutes_the_fit(case: tuple[int, int, int, int]) -> None:
    n, judges, m, seed = case
    rng = np.random.default_rng(seed)
    data = simulate(rng, rng.normal(0, 1, n), list(rng.normal(0, 0.5, judges)), m)
    node_perm = rng.permutation(n)  # new label of old node i
    judge_perm = rng.permutation(judges)
    relabelled = PanelComparisons.of(
        n, judges, judge_perm[data.judge], node_perm[data.first], node_perm[data.second],
        data.first_won,
    )  # fmt: skip
    a, b = fit_panel(data), fit_panel(relabelled)
    np.testing.assert_allclose(b.scores[node_perm], a.scores, atol=1e-8)
    np.testing.assert_allclose(b.se[node_perm], a.se, atol=1e-8)
    np.testing.assert_allclose(b.order_effects[judge_perm], a.order_effects, atol=1e-8)
    fa, fb = judge_fit(data, a), judge_fit(relabelled, b)
    np.testing.assert_allclose(fb.infit[judge_perm], fa.infit, atol=1e-8)


def test_covariance_matches_the_inverse_hessian_of_the_objective() -> None:
    rng = np.random.default_rng(3)
    data = simulate(rng, rng.normal(0, 1, 6), [0.4, -0.3], 120)
    lam = 0.01
    fit = fit_panel(data, prior_precision=lam)
    x = np.concatenate([fit.scores, fit.order_effects])
    size = x.size
    h = 1e-4
    hess = np.zeros((size, size))
    for i in range(size):
        for k in range(size):
            e_i, e_k = np.eye(size)[i] * h, np.eye(size)[k] * h
            hess[i, k] = (
                reference_objective(x + e_i + e_k, data, lam)
                - reference_objective(x + e_i - e_k, data, lam)
                - reference_objective(x - e_i + e_k, data, lam)
                + reference_objective(x - e_i - e_k, data, lam)
            ) / (4 * h * h)
    inverse = np.linalg.inv(hess)
    centre = np.eye(6) - 1.0 / 6
    np.testing.assert_allclose(fit.covariance, centre @ inverse[:6, :6] @ centre, atol=1e-4)
    np.testing.assert_allclose(fit.order_effect_se, np.sqrt(np.diag(inverse)[6:]), rtol=1e-3)


def test_per_judge_order_effects_are_recovered() -> None:
    rng = np.random.default_rng(11)
    etas = [0.0, 0.6, -0.4]
    data = simulate(rng, rng.normal(0, 1.5, 30), etas, 6000)
    fit = fit_panel(data)
    for k, eta in enumerate(etas):
        assert abs(fit.order_effects[k] - eta) < 3 * fit.order_effect_se[k]
    bias = position_bias_pp(data, fit, 1)
    assert bias is not None and bias.low < bias.shift < bias.high
    assert bias.shift > 0.05  # a 0.6 logit shift moves P(A) by well over 5 pp


def test_the_erratic_judge_misfits_and_the_others_do_not() -> None:
    rng = np.random.default_rng(5)
    data = simulate(rng, rng.normal(0, 1.6, 40), [0.0, 0.0, 0.0, 0.0], 1200, erratic=2)
    misfit = judge_misfit(data)
    assert misfit.flagged.tolist() == [False, False, True, False]
    assert misfit.order == (2,)
    assert misfit.stats.infit_z[2] > 4
    # in-sample statistics say the same, less sharply
    in_sample = judge_fit(data, fit_panel(data))
    assert int(np.argmax(in_sample.infit_z)) == 2
    agreement = consensus_agreement(data, fit_panel(data).scores)
    assert agreement[2].share < min(agreement[k].share for k in (0, 1, 3))
    assert agreement[2].high < agreement[0].low


def test_two_judges_are_never_flagged_against_each_other() -> None:
    rng = np.random.default_rng(6)
    data = simulate(rng, rng.normal(0, 1.6, 30), [0.0, 0.0], 600, erratic=1)
    misfit = judge_misfit(data)
    assert not misfit.flagged.any()
    assert misfit.stats.infit_z[1] > misfit.stats.infit_z[0]  # still shown


def test_min_comparisons_guards_the_flag() -> None:
    rng = np.random.default_rng(7)
    data = simulate(rng, rng.normal(0, 1.6, 20), [0.0, 0.0, 0.0], 600, erratic=1)
    stats = judge_fit(data, fit_panel(data))
    assert flag_judges(stats).tolist() == [False, True, False]
    assert flag_judges(stats, threshold=-np.inf).all()
    assert not flag_judges(stats, min_comparisons=int(stats.count.max()) + 1).any()
    quiet = judge_misfit(data, min_comparisons=int(stats.count.max()) + 1)
    assert not quiet.flagged.any()
    assert stats.count.min() >= JUDGE_MISFIT_MIN_COMPARISONS


def test_excluding_the_erratic_judge_changes_the_fit_and_weights_follow_the_action() -> None:
    rng = np.random.default_rng(8)
    truth = rng.normal(0, 1.6, 30)
    data = simulate(rng, truth, [0.0, 0.0, 0.0], 900, erratic=0)
    misfit = judge_misfit(data)
    assert misfit.flagged.tolist() == [True, False, False]
    assert misfit_weights(misfit.stats, misfit.flagged, "keep").tolist() == [1, 1, 1]
    assert misfit_weights(misfit.stats, misfit.flagged, "exclude").tolist() == [0, 1, 1]
    down = misfit_weights(misfit.stats, misfit.flagged, "downweight")
    assert 0 < down[0] < 1 and down[1:].tolist() == [1, 1]
    with pytest.raises(ValueError, match="unknown misfit action"):
        misfit_weights(misfit.stats, misfit.flagged, "drop")
    change = reliability_without(data, misfit_weights(misfit.stats, misfit.flagged, "exclude"))
    r_all = np.corrcoef(change.fit_all.scores, truth)[0, 1] ** 2
    r_after = np.corrcoef(change.fit_after.scores, truth)[0, 1] ** 2
    assert r_after > r_all
    # (the SSR need not rise: the erratic judge's comparisons also shrink the SEs)
    assert change.judge_weights.tolist() == [0, 1, 1]


def test_cohen_kappa_matches_a_worked_example() -> None:
    # Wikipedia "Cohen's kappa", first example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no
    a = [True] * 25 + [False] * 25
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([True, True], [True, True]))
    assert math.isnan(cohen_kappa([], []))


def test_pairwise_kappa_on_shared_edges_ignores_orientation() -> None:
    # judges 0 and 1 judge the same 6 edges, judge 1 sees them the other way round
    first = [0, 1, 2, 3, 4, 0] * 2
    second = [1, 2, 3, 4, 5, 2] * 2
    first = first[:6] + second[6:]
    second = [*second[:6], 0, 1, 2, 3, 4, 0]
    won0 = [True, False, True, True, False, False]
    won1 = [not w for w in won0]  # the same node wins, shown in the other position
    won1[5] = not won1[5]  # one disagreement
    data = PanelComparisons.of(6, 3, [0] * 6 + [1] * 6, first, second, won0 + won1)
    [kappa] = pairwise_kappa(data)
    assert (kappa.judge_a, kappa.judge_b, kappa.shared_edges) == (0, 1, 6)
    assert kappa.agreement == pytest.approx(5 / 6)
    lo_won0 = [True, False, True, True, False, False]
    lo_won1 = [True, False, True, True, False, True]
    assert kappa.kappa == pytest.approx(cohen_kappa(lo_won0, lo_won1))
    assert math.isnan(pairwise_kappa(data, min_shared=7)[0].kappa)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="itself"):
        PanelComparisons.of(3, 1, [0], [1], [1], [True])
    with pytest.raises(ValueError, match="judge holds an index"):
        PanelComparisons.of(3, 1, [1], [0], [1], [True])
    with pytest.raises(ValueError, match="same length"):
        PanelComparisons.of(3, 1, [0, 0], [0], [1], [True])
    data = PanelComparisons.of(3, 1, [0], [0], [1], [True])
    with pytest.raises(ValueError, match="prior_precision"):
        fit_panel(data, prior_precision=0.0)
    with pytest.raises(ValueError, match="weights"):
        fit_panel(data, weights=[-1.0])


@settings(deadline=None, max_examples=30)
@given(
    st.lists(st.floats(0.0, 5.0), min_size=1, max_size=4).filter(lambda s: sum(s) > 0.5),
    st.integers(0, 2**32 - 1),
)
def test_panel_member_follows_the_shares_and_is_deterministic(
    shares: list[float], seed: int
) -> None:
    keys = [(f"a{k}", f"b{k % 7}", k % 3) for k in range(3000)]
    picks = np.array([panel_member(shares, seed, a, b, r) for a, b, r in keys])
    share = np.asarray(shares) / sum(shares)
    counts = np.bincount(picks, minlength=len(shares)) / len(keys)
    # binomial SD at 3000 draws is at most 0.009: 5 SD
    np.testing.assert_allclose(counts, share, atol=0.046)
    assert np.all(counts[share == 0] == 0)
    again = [panel_member(shares, seed, a, b, r) for a, b, r in keys[:50]]
    assert again == picks[:50].tolist()


def test_panel_member_depends_on_order_repeat_and_seed_only() -> None:
    shares = [1.0, 1.0, 1.0]
    base = [panel_member(shares, 1, f"x{k}", f"y{k}", 0) for k in range(200)]
    assert base != [panel_member(shares, 2, f"x{k}", f"y{k}", 0) for k in range(200)]
    assert base != [panel_member(shares, 1, f"y{k}", f"x{k}", 0) for k in range(200)]
    assert base != [panel_member(shares, 1, f"x{k}", f"y{k}", 1) for k in range(200)]
    with pytest.raises(ValueError):
        panel_member([0, 0], 0, "a", "b", 0)
