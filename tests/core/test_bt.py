"""Bradley-Terry fit: agreement with independent computations, derivatives, properties."""

from __future__ import annotations

from unittest import mock

import choix
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cj_runner.core.bt import (
    DEFAULT_PRIOR_PRECISION,
    EXACT_COVARIANCE_MAX_N,
    BTFit,
    MLENotFoundError,
    fit_bt,
    max_score_change,
)
from cj_runner.core.bt import data as bt_data
from cj_runner.core.bt import fit as bt_fit
from cj_runner.core.bt import newton as bt_newton
from cj_runner.core.bt import solver as bt_solver

Comparisons = tuple[int, NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]


def simulate(
    rng: np.random.Generator,
    true: NDArray[np.float64],
    m: int,
    order_effect: float = 0.0,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
    """Random ordered pairs and outcomes drawn from the BT model with ``true`` scores."""
    n = true.size
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    p = 1.0 / (1.0 + np.exp(-(true[a] - true[b] + order_effect)))
    return a, b, rng.random(m) < p


def reference_objective(
    params: NDArray[np.float64],
    n: int,
    a: NDArray[np.intp],
    b: NDArray[np.intp],
    y: NDArray[np.float64],
    lam: float,
) -> float:
    """Negative log-posterior written independently of the module (theta, then eta)."""
    theta, eta = params[:n], params[n:].sum()
    d = theta[a] - theta[b] + eta
    loglik = np.sum(y * -np.logaddexp(0, -d) + (1 - y) * -np.logaddexp(0, d))
    return float(-loglik + 0.5 * lam * np.sum(params**2))


def reference_gradient(
    params: NDArray[np.float64],
    n: int,
    a: NDArray[np.intp],
    b: NDArray[np.intp],
    y: NDArray[np.float64],
    lam: float,
) -> NDArray[np.float64]:
    """Gradient of :func:`reference_objective`, by hand with ``np.add.at``."""
    theta, eta = params[:n], params[n:].sum()
    resid = y - 1.0 / (1.0 + np.exp(-(theta[a] - theta[b] + eta)))
    grad = lam * params.copy()
    np.add.at(grad, a, -resid)
    np.add.at(grad, b, resid)
    if params.size > n:
        grad[n] -= resid.sum()
    return grad


def reference_fit(
    n: int,
    a: NDArray[np.intp],
    b: NDArray[np.intp],
    y: NDArray[np.float64],
    lam: float,
    order_effect: bool,
) -> NDArray[np.float64]:
    """Maximise the reference posterior with BFGS, then centre the scores."""
    k = n + (1 if order_effect else 0)
    assert (
        scipy.optimize.check_grad(
            reference_objective, reference_gradient, np.full(k, 0.3), n, a, b, y, lam
        )
        < 1e-5
    )
    best = scipy.optimize.minimize(
        reference_objective,
        np.zeros(k),
        args=(n, a, b, y, lam),
        method="BFGS",
        jac=reference_gradient,
        options={"gtol": 1e-11, "maxiter": 10_000},
    )
    x = best.x
    theta = x[:n] - x[:n].mean()
    return np.concatenate([theta, x[n:]])


def strongly_connected_data(seed: int, n: int = 12, m: int = 300) -> Comparisons:
    """Data whose MLE exists: every ordered pair once each way plus random extra outcomes."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 0.8, n)
    ring_a = np.arange(n)
    ring_b = (ring_a + 1) % n
    a, b, y = simulate(rng, true, m)
    # a cycle of wins and a cycle of losses guarantee strong connectivity
    a = np.concatenate([a, ring_a, ring_b])
    b = np.concatenate([b, ring_b, ring_a])
    y = np.concatenate([y, np.ones(n, bool), np.ones(n, bool)])
    return n, a, b, y


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mle_agrees_with_choix_ilsr(seed: int) -> None:
    n, a, b, y = strongly_connected_data(seed)
    fit = fit_bt(n, a, b, y, prior_precision=0)
    winners = np.where(y, a, b)
    losers = np.where(y, b, a)
    data = list(zip(winners.tolist(), losers.tolist(), strict=True))
    ref = choix.ilsr_pairwise(n, data, tol=1e-12, max_iter=10_000)
    np.testing.assert_allclose(fit.scores, ref - ref.mean(), atol=1e-6)
    assert abs(fit.scores.mean()) < 1e-12
    assert fit.log_likelihood == pytest.approx(choix.log_likelihood_pairwise(data, ref), rel=1e-10)


@pytest.mark.parametrize("lam", [0.0, DEFAULT_PRIOR_PRECISION, 0.5])
@pytest.mark.parametrize("order_effect", [False, True])
def test_agrees_with_direct_scipy_maximisation(lam: float, order_effect: bool) -> None:
    n, a, b, y = strongly_connected_data(7, n=8, m=120)
    fit = fit_bt(n, a, b, y, prior_precision=lam, order_effect=order_effect)
    ref = reference_fit(n, a, b, y.astype(float), lam, order_effect)
    np.testing.assert_allclose(fit.scores, ref[:n], atol=1e-6)
    if order_effect:
        assert fit.order_effect == pytest.approx(ref[n], abs=1e-6)
    else:
        assert fit.order_effect is None and fit.order_effect_se is None


@pytest.mark.parametrize("order_effect", [False, True])
def test_covariance_is_the_inverse_information_under_sum_to_zero(order_effect: bool) -> None:
    n, a, b, y = strongly_connected_data(3, n=7, m=150)
    lam = 0.2
    fit = fit_bt(n, a, b, y, prior_precision=lam, order_effect=order_effect)
    x = np.concatenate([fit.scores, [fit.order_effect] if order_effect else []])
    k = x.size

    def grad(v: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(
            scipy.optimize.approx_fprime(v, reference_objective, 1e-6, n, a, b, y, lam)
        )

    hess = np.array([(grad(x + 1e-4 * e) - grad(x - 1e-4 * e)) / 2e-4 for e in np.eye(k)])
    cov_all = np.linalg.inv(0.5 * (hess + hess.T))
    centre = np.eye(n) - 1.0 / n
    expected = centre @ cov_all[:n, :n] @ centre
    assert fit.covariance is not None and fit.se is not None
    np.testing.assert_allclose(fit.covariance, expected, atol=2e-4)
    np.testing.assert_allclose(fit.se, np.sqrt(np.diag(fit.covariance)), rtol=1e-12)
    np.testing.assert_allclose(fit.covariance.sum(axis=1), 0.0, atol=1e-10)
    if order_effect:
        assert fit.order_effect_se == pytest.approx(np.sqrt(cov_all[n, n]), rel=1e-4)


def test_mle_covariance_is_pseudo_inverse_of_the_laplacian() -> None:
    n, a, b, y = strongly_connected_data(4, n=9, m=200)
    fit = fit_bt(n, a, b, y, prior_precision=0)
    p = 1 / (1 + np.exp(-(fit.scores[a] - fit.scores[b])))
    lap = np.zeros((n, n))
    np.add.at(lap, (a, b), -p * (1 - p))
    np.add.at(lap, (b, a), -p * (1 - p))
    lap[np.diag_indices(n)] = -lap.sum(axis=1)
    assert fit.covariance is not None
    np.testing.assert_allclose(fit.covariance, np.linalg.pinv(lap), atol=1e-10)


# ----------------------------------------------------------------------- derivatives


@pytest.mark.parametrize("order_effect", [False, True])
def test_gradient_matches_objective(order_effect: bool) -> None:
    n, a, b, y = strongly_connected_data(5, n=10, m=80)
    data = bt_data._prepare(n, a, b, y, np.linspace(0.5, 2.0, a.size))
    lam = 0.3
    rng = np.random.default_rng(0)

    def split(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
        return x[:n], float(x[n]) if order_effect else 0.0

    def f(x: NDArray[np.float64]) -> float:
        theta, eta = split(x)
        return bt_newton._objective(bt_newton._point(data, theta, eta), lam)

    def g(x: NDArray[np.float64]) -> NDArray[np.float64]:
        theta, eta = split(x)
        g_theta, g_eta, _ = bt_newton._derivatives(data, bt_newton._point(data, theta, eta), lam)
        return np.concatenate([g_theta, [g_eta] if order_effect else []])

    for _ in range(5):
        x = rng.normal(0, 1, n + (1 if order_effect else 0))
        err = scipy.optimize.check_grad(f, g, x, epsilon=1e-6)
        assert err < 1e-5 * max(1.0, float(np.linalg.norm(g(x))))


def test_information_matrix_matches_numerical_hessian() -> None:
    n, a, b, y = strongly_connected_data(6, n=9, m=90)
    data = bt_data._prepare(n, a, b, y, None)
    lam = 0.1
    theta = np.random.default_rng(1).normal(0, 1, n)
    _, _, info = bt_newton._derivatives(data, bt_newton._point(data, theta, 0.0), lam)
    system = bt_solver._Information(
        data, bt_data._structure(data), bt_data._sum_by(data.edge_of_pair, info, data.lo.size), lam
    )

    def g(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return bt_newton._derivatives(data, bt_newton._point(data, x, 0.0), lam)[0]

    numeric = np.array([(g(theta + 1e-6 * e) - g(theta - 1e-6 * e)) / 2e-6 for e in np.eye(n)])
    np.testing.assert_allclose(system.dense() - 1.0 / n, numeric, atol=1e-6)


# ------------------------------------------------------------------ solver code paths


def test_sparse_and_dense_solvers_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    n = 60
    true = rng.normal(0, 1, n)
    a, b, y = simulate(rng, true, 900, order_effect=0.3)
    dense = fit_bt(n, a, b, y, order_effect=True)
    monkeypatch.setattr(bt_data, "_DENSE_SOLVE_MAX_N", 5)
    sparse = fit_bt(n, a, b, y, order_effect=True)
    np.testing.assert_allclose(sparse.scores, dense.scores, atol=1e-8)
    assert sparse.order_effect == pytest.approx(dense.order_effect, abs=1e-8)
    assert sparse.covariance is not None and dense.covariance is not None
    np.testing.assert_allclose(sparse.covariance, dense.covariance, atol=1e-8)


@pytest.mark.parametrize("per_node", [6, 20])
def test_large_n_standard_errors_approximate_exact_ones(
    monkeypatch: pytest.MonkeyPatch, per_node: int
) -> None:
    rng = np.random.default_rng(per_node)
    n = 400
    a, b, y = simulate(rng, rng.normal(0, 1.5, n), n * per_node // 2, order_effect=0.2)
    exact = fit_bt(n, a, b, y, order_effect=True)
    monkeypatch.setattr(bt_fit, "EXACT_COVARIANCE_MAX_N", 100)
    approx = fit_bt(n, a, b, y, order_effect=True)
    assert approx.covariance is None and approx.se is not None and exact.se is not None
    np.testing.assert_allclose(approx.scores, exact.scores, atol=1e-8)
    ratio = approx.se / exact.se
    assert abs(ratio.mean() - 1) < 0.01
    assert ratio.min() > 0.8 and ratio.max() < 1.05
    assert approx.order_effect_se == pytest.approx(exact.order_effect_se, rel=1e-6)


def test_exact_covariance_threshold_is_documented_size() -> None:
    assert EXACT_COVARIANCE_MAX_N >= 1000
    n = 3
    fit = fit_bt(n, [0, 1, 2], [1, 2, 0], [True, True, True])
    assert fit.covariance is not None and fit.covariance.shape == (3, 3)


# ------------------------------------------------------------------------ properties

PROPS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def comparison_sets(draw: st.DrawFn, min_m: int = 1) -> Comparisons:
    n = draw(st.integers(2, 7))
    m = draw(st.integers(min_m, 25))
    a = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)))
    shift = np.array(draw(st.lists(st.integers(1, n - 1), min_size=m, max_size=m)))
    y = np.array(draw(st.lists(st.booleans(), min_size=m, max_size=m)))
    return n, a, (a + shift) % n, y


@PROPS
@given(data=comparison_sets(), seed=st.integers(0, 2**32 - 1), order_effect=st.booleans())
def test_relabelling_permutes_scores(data: Comparisons, seed: int, order_effect: bool) -> None:
    n, a, b, y = data
    perm = np.random.default_rng(seed).permutation(n)  # old node i becomes perm[i]
    before = fit_bt(n, a, b, y, order_effect=order_effect)
    after = fit_bt(n, perm[a], perm[b], y, order_effect=order_effect)
    np.testing.assert_allclose(after.scores[perm], before.scores, atol=1e-7)
    assert before.se is not None and after.se is not None
    np.testing.assert_allclose(after.se[perm], before.se, atol=1e-7)
    if order_effect:
        assert after.order_effect == pytest.approx(before.order_effect, abs=1e-7)


@PROPS
@given(data=comparison_sets(), order_effect=st.booleans())
def test_swapping_winners_and_losers_negates_scores(data: Comparisons, order_effect: bool) -> None:
    n, a, b, y = data
    before = fit_bt(n, a, b, y, order_effect=order_effect)
    after = fit_bt(n, a, b, ~y, order_effect=order_effect)
    np.testing.assert_allclose(after.scores, -before.scores, atol=1e-7)
    assert before.se is not None and after.se is not None
    np.testing.assert_allclose(after.se, before.se, atol=1e-7)
    if order_effect:
        assert after.order_effect == pytest.approx(-(before.order_effect or 0.0), abs=1e-7)


@PROPS
@given(
    data=comparison_sets(),
    winner=st.integers(0, 6),
    loser_shift=st.integers(1, 6),
    in_position_a=st.booleans(),
    lam=st.sampled_from([1e-4, DEFAULT_PRIOR_PRECISION, 1.0]),
)
def test_one_more_win_never_lowers_the_winner(
    data: Comparisons, winner: int, loser_shift: int, in_position_a: bool, lam: float
) -> None:
    n, a, b, y = data
    i = winner % n
    j = (i + 1 + loser_shift % (n - 1)) % n if n > 2 else 1 - i
    if i == j:
        j = (i + 1) % n
    first, second, won = (i, j, True) if in_position_a else (j, i, False)
    before = fit_bt(n, a, b, y, prior_precision=lam)
    after = fit_bt(
        n, np.append(a, first), np.append(b, second), np.append(y, won), prior_precision=lam
    )
    assert after.scores[i] >= before.scores[i] - 1e-9
    assert after.scores[j] <= before.scores[j] + 1e-9


@PROPS
@given(seed=st.integers(0, 2**32 - 1), copies=st.integers(2, 4))
def test_standard_errors_shrink_with_repeated_comparisons(seed: int, copies: int) -> None:
    n, a, b, y = strongly_connected_data(seed % 1000, n=6, m=30)
    once = fit_bt(n, a, b, y, prior_precision=0)
    repeated = fit_bt(
        n, np.tile(a, copies), np.tile(b, copies), np.tile(y, copies), prior_precision=0
    )
    weighted = fit_bt(n, a, b, y, np.full(a.size, float(copies)), prior_precision=0)
    np.testing.assert_allclose(repeated.scores, once.scores, atol=1e-8)
    assert once.se is not None and repeated.se is not None and weighted.se is not None
    np.testing.assert_allclose(repeated.se, once.se / np.sqrt(copies), rtol=1e-7)
    np.testing.assert_allclose(weighted.se, repeated.se, rtol=1e-9)


def test_standard_errors_shrink_as_comparisons_grow() -> None:
    rng = np.random.default_rng(21)
    n = 20
    true = rng.normal(0, 1, n)
    a, b, y = simulate(rng, true, 6400)
    previous = None
    for m in (400, 1600, 6400):
        fit = fit_bt(n, a[:m], b[:m], y[:m])
        assert fit.se is not None
        if previous is not None:
            assert np.all(fit.se < previous)
        previous = fit.se


# ------------------------------------------------------------------------ simulation


@pytest.mark.parametrize("seed", range(5))
def test_recovers_true_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 50
    true = rng.normal(0, 1.5, n)
    a, b, y = simulate(rng, true, n * 20 // 2)  # ~20 comparisons per node
    fit = fit_bt(n, a, b, y)
    rho = scipy.stats.spearmanr(fit.scores, true).statistic
    assert rho > 0.9


def test_recovers_order_effect_within_two_standard_errors() -> None:
    rng = np.random.default_rng(1)
    n = 50
    true = rng.normal(0, 1.5, n)
    a, b, y = simulate(rng, true, 2000, order_effect=0.2)
    fit = fit_bt(n, a, b, y, order_effect=True)
    assert fit.order_effect is not None and fit.order_effect_se is not None
    assert abs(fit.order_effect - 0.2) < 2 * fit.order_effect_se
    assert fit.order_effect_se < 0.1


def test_standard_errors_are_calibrated() -> None:
    """Across simulated batches about 95% of true values lie within 1.96 SE."""
    rng = np.random.default_rng(99)
    n, m, reps = 30, 600, 60
    hits_theta = hits_eta = total = 0
    for _ in range(reps):
        true = rng.normal(0, 1, n)
        a, b, y = simulate(rng, true, m, order_effect=0.2)
        fit = fit_bt(n, a, b, y, order_effect=True)
        assert fit.se is not None and fit.order_effect_se is not None
        assert fit.order_effect is not None
        centred = true - true.mean()
        hits_theta += int(np.sum(np.abs(fit.scores - centred) < 1.96 * fit.se))
        total += n
        hits_eta += int(abs(fit.order_effect - 0.2) < 1.96 * fit.order_effect_se)
    assert 0.92 < hits_theta / total < 0.98
    assert hits_eta >= 0.85 * reps


# --------------------------------------------------------------- MLE non-existence


def test_mle_refuses_a_node_that_won_everything() -> None:
    # node 3 beat everybody; nodes 0-2 form a cycle
    a = [0, 1, 2, 3, 3, 3]
    b = [1, 2, 0, 0, 1, 2]
    y = [True] * 6
    with pytest.raises(MLENotFoundError, match=r"nodes \[3\] never lost"):
        fit_bt(4, a, b, y, prior_precision=0)
    fit = fit_bt(4, a, b, y)  # the default prior keeps it finite
    assert np.all(np.isfinite(fit.scores))
    assert fit.scores[3] == fit.scores.max()
    assert 2 < fit.scores[3] - np.sort(fit.scores)[-2] < 10


def test_mle_refuses_a_node_without_comparisons() -> None:
    with pytest.raises(MLENotFoundError, match=r"nodes \[2\] have no comparisons"):
        fit_bt(3, [0, 1], [1, 0], [True, True], prior_precision=0)


def test_mle_refuses_an_order_effect_explaining_everything() -> None:
    # every pair shown both ways, position A always won: eta -> infinity
    a = [0, 1, 1, 2, 2, 0]
    b = [1, 0, 2, 1, 0, 2]
    with pytest.raises(MLENotFoundError, match="order effect"):
        fit_bt(3, a, b, [True] * 6, order_effect=True, prior_precision=0)
    fit_bt(3, a, b, [True] * 6, prior_precision=0)  # without eta the scores are fine
    fit = fit_bt(3, a, b, [True] * 6, order_effect=True)
    assert fit.order_effect is not None and fit.order_effect > 2


def test_mle_refuses_an_order_effect_that_is_not_identified() -> None:
    # each pair in one orientation only, outcomes mixed: eta trades off against the scores
    a = [0, 0, 1, 1]
    b = [1, 1, 2, 2]
    y = [True, False, True, False]
    fit_bt(3, a, b, y, prior_precision=0)
    with pytest.raises(MLENotFoundError, match="cannot be separated"):
        fit_bt(3, a, b, y, order_effect=True, prior_precision=0)


def test_disconnected_graph_is_finite_with_the_prior() -> None:
    a = [0, 1, 2, 3]
    b = [1, 0, 3, 2]
    y = [True, True, True, False]
    fit = fit_bt(4, a, b, y)
    assert fit.se is not None
    np.testing.assert_allclose(fit.scores[:2].mean(), 0.0, atol=1e-10)
    np.testing.assert_allclose(fit.scores[2:].mean(), 0.0, atol=1e-10)
    # the offset between the components is unidentified: the SEs say so
    assert np.all(fit.se > 4)
    with pytest.raises(MLENotFoundError):
        fit_bt(4, a, b, y, prior_precision=0)


# ------------------------------------------------------------------ interface details


def test_warm_start_reaches_same_fit_in_fewer_iterations() -> None:
    rng = np.random.default_rng(8)
    n = 40
    a, b, y = simulate(rng, rng.normal(0, 1, n), 600)
    cold = fit_bt(n, a, b, y)
    warm = fit_bt(n, a, b, y, init=cold.scores + 3.0)  # shifted: init is re-centred
    assert warm.iterations <= 1 < cold.iterations
    np.testing.assert_allclose(warm.scores, cold.scores, atol=1e-9)


def test_compute_se_false_skips_uncertainty() -> None:
    fit = fit_bt(3, [0, 1, 2], [1, 2, 0], [True, False, True], order_effect=True, compute_se=False)
    assert fit.se is None and fit.covariance is None and fit.order_effect_se is None
    assert fit.order_effect is not None


def test_result_is_read_only() -> None:
    fit = fit_bt(3, [0, 1, 2], [1, 2, 0], [True, False, True])
    assert isinstance(fit, BTFit)
    with pytest.raises(ValueError):
        fit.scores[0] = 1.0


def test_weights_equal_repeated_comparisons_and_zero_weight_drops() -> None:
    a = np.array([0, 1, 2, 0, 2])
    b = np.array([1, 2, 0, 2, 1])
    y = np.array([True, False, True, True, False])
    w = np.array([2.0, 1.0, 3.0, 0.0, 1.0])
    weighted = fit_bt(3, a, b, y, w)
    keep = np.repeat(np.arange(5), w.astype(int))
    repeated = fit_bt(3, a[keep], b[keep], y[keep])
    np.testing.assert_allclose(weighted.scores, repeated.scores, atol=1e-10)
    assert weighted.log_likelihood == pytest.approx(repeated.log_likelihood, rel=1e-12)


def test_tie_as_half_win_equals_a_win_and_a_loss_at_half_weight() -> None:
    a = np.array([0, 1, 2, 0])
    b = np.array([1, 2, 0, 2])
    y = np.array([1.0, 0.0, 1.0, 0.5])
    tie = fit_bt(3, a, b, y)
    split = fit_bt(
        3,
        np.append(a[:3], [0, 0]),
        np.append(b[:3], [2, 2]),
        [1.0, 0.0, 1.0, 1.0, 0.0],
        [1, 1, 1, 0.5, 0.5],
    )
    np.testing.assert_allclose(tie.scores, split.scores, atol=1e-10)


def test_single_node_and_no_comparisons() -> None:
    one = fit_bt(1, [], [], [])
    assert one.scores.tolist() == [0.0] and one.se is not None and one.se.tolist() == [0.0]
    empty = fit_bt(4, [], [], [])
    assert np.all(empty.scores == 0) and empty.se is not None
    # with no data each centred score has the prior variance (1 - 1/n) / lambda
    np.testing.assert_allclose(empty.se, np.sqrt(0.75 / DEFAULT_PRIOR_PRECISION))
    assert empty.log_likelihood == 0.0 and empty.iterations == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"first": [0, 3], "second": [1, 0], "first_won": [1, 0]}, "outside"),
        ({"first": [0, 1], "second": [0, 2], "first_won": [1, 0]}, "itself"),
        ({"first": [0, 1], "second": [1], "first_won": [1, 0]}, "same length"),
        ({"first": [0.0, 1.0], "second": [1, 2], "first_won": [1, 0]}, "integer"),
        ({"first": [0, 1], "second": [1, 2], "first_won": [2, 0]}, "first_won"),
        ({"first": [0, 1], "second": [1, 2], "first_won": [1, 0], "weights": [1, -1]}, "weights"),
    ],
)
def test_invalid_input_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_bt(3, **kwargs)  # type: ignore[arg-type]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="prior_precision"):
        fit_bt(2, [0], [1], [True], prior_precision=-1)
    with pytest.raises(ValueError, match="n_items"):
        fit_bt(0, [], [], [])
    with pytest.raises(ValueError, match="init"):
        fit_bt(2, [0], [1], [True], init=[0.0])


def test_max_score_change() -> None:
    assert max_score_change([0.0, 1.0, -1.0], [0.1, 0.7, -1.0]) == pytest.approx(0.3)
    assert max_score_change([], []) == 0.0
    with pytest.raises(ValueError):
        max_score_change([0.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        max_score_change([np.nan], [0.0])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 40), lam=st.floats(0.01, 2.0))
def test_bordered_solve_matches_the_dense_system(seed: int, n: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, 4 * n)
    b = (a + rng.integers(1, n, 4 * n)) % n
    data, structure = bt_data._prepared(n, a, b, rng.random(4 * n) < 0.5, None)
    point = bt_newton._point(data, rng.normal(0, 1, n), 0.2)
    _, _, info = bt_newton._derivatives(data, point, lam)
    system = bt_solver._Information(
        data, bt_data._structure(data), bt_data._sum_by(data.edge_of_pair, info, data.lo.size), lam
    )
    h = bt_data._sum_by(data.a, info, n) - bt_data._sum_by(data.b, info, n)
    corner = float(np.sum(info)) + lam
    rhs, last = rng.normal(0, 1, n), float(rng.normal())
    rhs -= rhs.mean()  # as a centred fit's gradient (and h) are
    x, y = system.solve_bordered(h, corner, rhs, last, 1e-12)
    full = np.block([[system.dense(), h[:, None]], [h[None, :], np.array([[corner]])]])
    expected = np.linalg.solve(full, np.append(rhs, last))
    # the same up to the scores' mean, which the Newton direction removes
    np.testing.assert_allclose(x - x.mean(), expected[:n] - expected[:n].mean(), atol=1e-8)
    assert y == pytest.approx(expected[n], abs=1e-8)
    # and a centred plain solve without 11'/n matches the dense solve the same way
    with mock.patch.object(bt_data, "_DENSE_SOLVE_MAX_N", 0):  # conjugate gradients
        plain = system.solve(rhs, 1e-12, centred=True)
    dense = np.linalg.solve(system.dense(), rhs)
    np.testing.assert_allclose(plain - plain.mean(), dense - dense.mean(), atol=1e-8)
    assert structure is not None


def test_loose_fits_of_large_batches_solve_eta_in_one_bordered_solve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(21)
    n = 400  # above the dense solver's limit: conjugate gradients
    a, b, y = simulate(rng, rng.normal(0, 1.5, n), 8 * n, order_effect=0.3)
    exact = fit_bt(n, a, b, y, order_effect=True, compute_se=False)
    bordered: list[int] = []
    original = bt_solver._Information.solve_bordered

    def counted(self: bt_solver._Information, *args: object) -> tuple[np.ndarray, float]:
        bordered.append(1)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bt_solver._Information, "solve_bordered", counted)
    loose = fit_bt(n, a, b, y, order_effect=True, compute_se=False, tolerance=1e-6)
    assert bordered  # the per-wave refit's path
    np.testing.assert_allclose(loose.scores, exact.scores, atol=1e-5)
    assert loose.order_effect == pytest.approx(exact.order_effect, abs=1e-5)
    bordered.clear()
    fit_bt(n, a, b, y, order_effect=True, compute_se=False)
    assert not bordered  # exact fits keep the block elimination


def test_the_same_read_only_arrays_are_prepared_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n = 30
    a, b, y = simulate(rng, rng.normal(0, 1, n), 300)
    prepared: list[int] = []
    original = bt_data._prepare

    def counted(*args: object) -> object:
        prepared.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bt_data, "_prepare", counted)
    frozen = [np.array(x) for x in (a, b, y)]
    for x in frozen:
        x.setflags(write=False)
    first = fit_bt(n, *frozen, order_effect=True)
    second = fit_bt(n, *frozen, prior_precision=0.5)
    assert len(prepared) == 1
    np.testing.assert_array_equal(first.scores, fit_bt(n, a, b, y, order_effect=True).scores)
    np.testing.assert_array_equal(second.scores, fit_bt(n, a, b, y, prior_precision=0.5).scores)
    # writable arrays (a caller may change them in place) are prepared every time
    prepared.clear()
    fit_bt(n, a, b, y)
    fit_bt(n, a, b, y)
    assert len(prepared) == 2
