"""Check pairs (``MISFIT_CHECK_SHARE``): the Bayes factor that allocates them, the pairs
chosen, and how the workflow plans them (docs/statistics.md, "Check pairs")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.config import Settings
from cj_runner.core.continuation import ContinuationLimits
from cj_runner.core.misfit_checks import END_SHARE, check_pairs, random_judging_log_bf
from cj_runner.core.models import edge
from cj_runner.core.workflow import WorkflowState
from cj_runner.services.harness import SimulatedJudge, run_harness
from cj_runner.services.misfit_sim import simulation_settings


def quadrature_log_bf(node: int, a, b, y, scores, tau) -> float:  # type: ignore[no-untyped-def]
    """The same Bayes factor by a fine rectangle rule over +-15 prior SDs (200,001
    points; scipy's adaptive ``quad`` misses the narrow peak of a long record)."""
    as_a, as_b = a == node, b == node
    won = np.concatenate([y[as_a], ~y[as_b]])
    opp = np.concatenate([scores[b[as_a]], scores[a[as_b]]])
    theta = np.linspace(-15 * tau, 15 * tau, 200_001)
    step = theta[1] - theta[0]
    z = theta[:, None] - opp[None, :]
    loglik = -np.where(won[None, :], np.logaddexp(0, -z), np.logaddexp(0, z)).sum(axis=1)
    log_prior = -0.5 * (theta / tau) ** 2 - math.log(tau * math.sqrt(2 * math.pi))
    log_marginal = float(scipy.special.logsumexp(loglik + log_prior)) + math.log(step)
    return won.size * math.log(0.5) - log_marginal


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 8),
    m=st.integers(1, 30),
    tau=st.floats(0.3, 3.0),
)
def test_the_bayes_factor_matches_quadrature(seed: int, n: int, m: int, tau: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    y = rng.random(m) < 0.5
    scores = rng.normal(0, tau, n)
    got = random_judging_log_bf(n, a, b, y, scores, tau)
    for i in range(n):
        if not np.any((a == i) | (b == i)):
            assert got[i] == 0.0
            continue
        assert got[i] == pytest.approx(quadrature_log_bf(i, a, b, y, scores, tau), abs=5e-3)


def test_the_bayes_factor_tells_a_coin_from_the_model() -> None:
    # node 0 sits in the middle; lopsided opponents at -3 and +3
    scores = np.array([0.0, -3.0, 3.0])
    a = np.array([0] * 10 + [0] * 10)
    b = np.array([1] * 10 + [2] * 10)
    as_predicted = np.array([True] * 10 + [False] * 10)  # beats the weak, loses to the strong
    coin = np.array([True, False] * 10)
    follows, tosses = (
        random_judging_log_bf(3, a, b, y, scores, 1.5)[0] for y in (as_predicted, coin)
    )
    assert follows < -5 < 5 < tosses


def comparisons(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.6, n)
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    y = rng.random(m) < scipy.special.expit(truth[a] - truth[b])
    return a, b, y, truth


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 40), k=st.integers(0, 12))
def test_check_pairs_go_to_the_far_end_on_free_edges(seed: int, n: int, k: int) -> None:
    a, b, y, truth = comparisons(n, 3 * n, seed)
    rng = np.random.default_rng(seed)
    blocked = {edge(int(i), int(j)) for i, j in zip(a[:n], b[:n], strict=True) if i != j}
    counts = np.bincount(a, minlength=n), np.bincount(b, minlength=n)
    pairs = check_pairs(
        n, a, b, y, truth, 1.6, k, a_counts=counts[0], b_counts=counts[1], blocked=blocked, rng=rng
    )
    assert len(pairs) <= k
    assert len({p.edge for p in pairs}) == len(pairs)
    assert not {p.edge for p in pairs} & blocked
    order = np.argsort(truth, kind="stable")
    m = max(2, round(n * END_SHARE))
    low, high = set(order[:m].tolist()), set(order[-m:].tolist())
    median = float(np.median(truth))
    for p in pairs:
        # one of the two is the checked node, the other is at the end far from it
        assert any(
            (other in (low if truth[node] > median else high))
            for node, other in ((p.a, p.b), (p.b, p.a))
        )
        assert p.a != p.b
    # the same inputs give the same pairs: nothing is remembered between waves
    again = check_pairs(
        n,
        a,
        b,
        y,
        truth,
        1.6,
        k,
        a_counts=counts[0],
        b_counts=counts[1],
        blocked=blocked,
        rng=np.random.default_rng(seed),
    )
    assert again == pairs


def test_an_essay_never_compared_with_the_far_end_is_checked_first() -> None:
    n = 16
    scores = np.linspace(-3, 3, n)
    # every node but node 8 (middle) already met the far end
    a, b = [], []
    for i in range(n):
        if i == 8:
            continue
        a.append(i)
        b.append(0 if scores[i] > np.median(scores) else n - 1)
    a_arr, b_arr = np.array(a), np.array(b)
    y = scores[a_arr] > scores[b_arr]
    zeros = np.zeros(n, dtype=np.int64)
    pairs = check_pairs(
        n,
        a_arr,
        b_arr,
        y,
        scores,
        1.5,
        1,
        a_counts=zeros,
        b_counts=zeros,
        rng=np.random.default_rng(0),
    )
    assert len(pairs) == 1 and 8 in (pairs[0].a, pairs[0].b)
    # and it is checked against the lowest essays (it sits above the median)
    other = pairs[0].b if pairs[0].a == 8 else pairs[0].a
    assert other in set(np.argsort(scores)[:2].tolist())


def test_a_wave_spends_its_check_share_after_the_main_pairs() -> None:
    n = 40
    truth = np.random.default_rng(3).normal(0, 1.64, n)
    plain = run_harness(SimulatedJudge(truth), simulation_settings(n, 6, "infogain", 0.0), seed=3)
    checked = run_harness(
        SimulatedJudge(truth), simulation_settings(n, 6, "infogain", 0.15), seed=3
    )
    assert plain.workflow is not None and checked.workflow is not None
    assert plain.comparisons == checked.comparisons  # the same budget, spent

    def far_share(workflow) -> float:  # type: ignore[no-untyped-def]
        a, b, _ = workflow.comparison_arrays()
        return float(np.mean(np.abs(truth[a] - truth[b]) > 2.5))

    assert far_share(checked.workflow) > far_share(plain.workflow) + 0.05


def test_check_pairs_are_oriented_by_the_fair_complement_rule() -> None:
    # the setting of the test above: node 8 is checked against node 0 or 1, and both
    # edges were asked once with node 8 in position A: the complement puts it in B
    n = 16
    scores = np.linspace(-3, 3, n)
    a = np.array([i for i in range(n) if i != 8])
    b = np.array([0 if scores[i] > np.median(scores) else n - 1 for i in range(n) if i != 8])
    y = scores[a] > scores[b]
    zeros = np.zeros(n, dtype=np.int64)
    asked = {(0, 8): (0, 1), (1, 8): (0, 1)}
    (pair,) = check_pairs(
        n,
        a,
        b,
        y,
        scores,
        1.5,
        1,
        a_counts=zeros,
        b_counts=zeros,
        orientation_counts=asked,
        rng=np.random.default_rng(0),
    )
    assert pair.b == 8 and pair.a in (0, 1)


def _state(check_share: float, seed: int = 5, total_budget: int = 240) -> WorkflowState:
    return WorkflowState(
        n_nodes=24,
        n_students=24,
        total_budget=total_budget,
        limits=ContinuationLimits(0.8, 12, 0.0, 50, 2, 1),
        wave_size=12,
        strategy="infogain",
        seed=seed,
        check_share=check_share,
    )


def _recorded(check_share: float, total_budget: int = 240) -> WorkflowState:
    """A state with three waves of answers from a model-following judge (24 essays; the
    budget is 20 comparisons per essay unless given)."""
    wf = _state(check_share, total_budget=total_budget)
    truth = np.random.default_rng(2).normal(0, 1.6, wf.n_nodes)
    rng = np.random.default_rng(9)
    key = 0
    for wave in (1, 2, 3):
        planned = wf.plan_wave(wave)
        for p in planned:
            wf.count_call()
            won = rng.random() < scipy.special.expit(truth[p.a] - truth[p.b])
            wf.record_success(p.a, p.b, "A" if won else "B", key=key)
            key += 1
        wf.end_wave(wave, [(p.a, p.b) for p in planned])
    return wf


def test_a_wave_plans_its_check_pairs_after_the_main_ones() -> None:
    checked = _recorded(0.25)
    pairs = checked.plan_wave(4)
    assert len(pairs) == 12 == len(checked.wave_modes)
    assert all(m == checked.mode for m in checked.wave_modes)
    n_check = 3  # 12 x 0.25
    assert len({p.edge for p in pairs}) == len(pairs)
    eb = checked.posterior()
    scores = np.asarray(eb.fit.scores)
    order = np.argsort(scores, kind="stable")
    low, high = set(order[:3].tolist()), set(order[-3:].tolist())
    for p in pairs[12 - n_check :]:
        assert (p.a in low | high) or (p.b in low | high)
    # a state rebuilt from the same answers (a resumed batch) plans the same wave
    assert _recorded(0.25).plan_wave(4) == pairs


def test_without_a_check_share_the_first_wave_and_the_later_ones_are_unchanged() -> None:
    assert _recorded(0.0).plan_wave(4) == _recorded(0.0).plan_wave(4)
    # before any answer there is nothing to check: the first wave is the plain one
    assert _state(0.25).plan_wave(1) == _state(0.0).plan_wave(1)


def test_a_budget_that_reaches_every_pair_asks_no_check_pairs() -> None:
    # 24 essays have 276 pairs: a budget of 276 or more compares every essay with both ends
    # in coverage, so the waves are the plain ones (spec §11's reference shapes keep theirs)
    for budget in (276, 552):
        assert _recorded(0.25, budget).plan_wave(4) == _recorded(0.0, budget).plan_wave(4)
    assert _recorded(0.25, 275).plan_wave(4) != _recorded(0.0, 275).plan_wave(4)


def test_the_setting_is_validated() -> None:
    assert Settings().MISFIT_CHECK_SHARE == 0.25
    assert Settings(MISFIT_CHECK_SHARE=0.15).MISFIT_CHECK_SHARE == 0.15
    with pytest.raises(ValueError):
        Settings(MISFIT_CHECK_SHARE=0.6)
    with pytest.raises(ValueError):
        Settings(MISFIT_CHECK_SHARE=float("nan"))
