"""The evidence for ``tau`` between 200 and 400 nodes (docs/statistics.md, "Large batches:
the evidence for tau"): the second-order term for the robust reliability and the
sampler's start; selection keeps the plain evidence; below 200 nodes selection and the
sampler's start keep the plain evidence (the robust reliability there:
tests/core/test_reliability_small.py)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import bench_large_posterior as bench
from cj_runner.config import Settings
from cj_runner.core import evidence
from cj_runner.core.bt import fit_bt
from cj_runner.core.evidence import _Evidence, _maximise
from cj_runner.core.posterior import gibbs_posterior
from cj_runner.core.robust import (
    EmpiricalBayesFit,
    empirical_bayes_fit,
    empirical_bayes_prior_sd,
    robust_reliability,
)
from tests.core.test_evidence import harness_design, random_design


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(3, 200),
    per_node=st.floats(0.5, 8.0),
    sd=st.floats(0.2, 3.0),
    seed=st.integers(0, 2**16),
)
def test_nothing_moves_up_to_200_nodes(n: int, per_node: float, sd: float, seed: int) -> None:
    """Up to 200 nodes the empirical-Bayes fit selection uses (and the sampler's start)
    takes the plain (dense) Laplace evidence's maximum, as before: the shown scores stand."""
    a, b, y, _ = random_design(n, max(2, int(per_node * n / 2)), sd, seed)
    plain = math.exp(_maximise(_Evidence(n, a, b, y, dense=True, second_order=False)))
    assert empirical_bayes_fit(n, a, b, y).prior_sd == plain


@settings(max_examples=3, deadline=None)
@given(n=st.integers(201, 400), seed=st.integers(0, 2**16))
def test_from_200_nodes_the_fit_takes_the_second_order_evidence(n: int, seed: int) -> None:
    """Between 200 and 400 nodes: the robust reliability's ``tau`` is the dense
    second-order evidence's maximum; selection's the plain Bethe evidence's (the measured
    choice, docs/decisions.md)."""
    a, b, y, _ = random_design(n, 2 * n, 1.6, seed)
    second = math.exp(_maximise(_Evidence(n, a, b, y, dense=True, second_order=True)))
    assert empirical_bayes_fit(n, a, b, y).prior_sd == second
    plain_bethe = math.exp(_maximise(_Evidence(n, a, b, y, dense=False, second_order=False)))
    assert empirical_bayes_prior_sd(n, a, b, y) == plain_bethe


def test_thresholds() -> None:
    assert evidence.SECOND_ORDER_MIN_N == 200
    assert evidence.SELECTION_SECOND_ORDER_MIN_N == evidence.DENSE_MAX_N == 400
    for n in (200, 201):
        a, b, y, _ = random_design(n, 2 * n, 1.0, 0)
        assert _Evidence(n, a, b, y).second_order == (n > 200)


def test_250_node_infogain_batches_get_the_spread_the_sampler_finds() -> None:
    """Three seeded ``infogain`` batches of 250 essays at 10 comparisons per essay (true
    SD 1.6). The fit's ``tau`` is above the plain evidence's in each (measured 1.14, 1.85,
    1.71 against 0.23, 1.58, 1.44) and, in the first, within 10% of the Gibbs sampler's
    posterior spread (an oracle that integrates over ``tau``: 1.09) where the plain
    evidence is near the grid's bottom. The robust reliability's error against the true
    one (measured -0.70, +0.005, -0.07 with the plain evidence; -0.13, +0.04, -0.03 now)
    shrinks on average."""
    n = 250
    old_errors, new_errors = [], []
    for seed in range(3):
        a, b, y, truth = harness_design(n, "infogain", 10, seed)
        centred = truth - truth.mean()
        fit = empirical_bayes_fit(n, a, b, y)
        plain = math.exp(_maximise(_Evidence(n, a, b, y, dense=True, second_order=False)))
        assert fit.prior_sd > plain
        if seed == 0:
            assert plain < 0.3
            gibbs = gibbs_posterior(n, a, b, y, np.random.default_rng(0), burn_in=300, draws=600)
            spread = (float(gibbs.scores @ gibbs.scores) + float(np.sum(gibbs.se**2))) / n
            assert abs(math.log(fit.prior_sd / math.sqrt(spread))) < 0.1
        true_reliability = float(np.corrcoef(fit_bt(n, a, b, y).scores, centred)[0, 1] ** 2)
        plain_fit = fit_bt(n, a, b, y, prior_precision=1 / plain**2, exact_se=True)
        old = robust_reliability(
            n, a, b, y, posterior=EmpiricalBayesFit(plain_fit, plain, math.inf)
        ).value
        new = robust_reliability(n, a, b, y, posterior=fit).value
        assert old is not None and new is not None
        old_errors.append(abs(old - true_reliability))
        new_errors.append(abs(new - true_reliability))
    assert np.mean(new_errors) < 0.08
    assert np.mean(new_errors) < np.mean(old_errors) / 2


def test_with_the_default_check_pairs_the_250_node_design_keeps_its_spread() -> None:
    """The first batch above, with the default check pairs: they spread the design, and the
    plain evidence no longer collapses (measured 1.47 against 0.23 without; true SD 1.6)."""
    share = Settings().MISFIT_CHECK_SHARE
    assert share > 0
    a, b, y, _ = harness_design(250, "infogain", 10, 0, check_share=share)
    plain = math.exp(_maximise(_Evidence(250, a, b, y, dense=True, second_order=False)))
    assert plain > 1.0


def test_the_benchmark_rules_restore_the_product() -> None:
    saved = (evidence.SECOND_ORDER_MIN_N, evidence.SELECTION_SECOND_ORDER_MIN_N)
    with bench.rule("before"):
        assert evidence.SECOND_ORDER_MIN_N == evidence.DENSE_MAX_N
    with bench.rule("selection"):
        assert evidence.SELECTION_SECOND_ORDER_MIN_N == evidence.SECOND_ORDER_MIN_N
    assert saved == (evidence.SECOND_ORDER_MIN_N, evidence.SELECTION_SECOND_ORDER_MIN_N)
