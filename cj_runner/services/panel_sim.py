"""Panels in simulation: is the erratic judge flagged, is a judge's position bias recovered,
does excluding a flagged judge make the scale truer?

A synthetic batch runs through the workflow's own pair selection
(:class:`cj_runner.core.workflow.WorkflowState`, as the convergence harness does); each
call goes to the judge :func:`cj_runner.core.panel_design.panel_member` picks, as in a
panel batch (node indices stand in for the essays' checksums), and with ``double_share``
that share of each wave's pairs is also asked of a second judge as the workflow plans it
(the pairs Cohen's kappa compares). The judges follow the
mock judge's model (logistic noise, a position bias added to P(A wins), clipped to
[0, 1]) or answer at random (erratic). The analysis is :mod:`cj_runner.core.panel`'s.

``benchmarks/bench_panels.py`` prints these rates; ``tests/services/test_panel_sim.py``
checks them on seeded replicates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cj_runner.config import Settings
from cj_runner.core.models import PlannedPair
from cj_runner.core.panel import (
    KAPPA_MIN_SHARED_EDGES,
    PanelComparisons,
    PanelFit,
    fit_panel,
    judge_misfit,
    pairwise_kappa,
    position_bias_pp,
    reliability_without,
)
from cj_runner.core.panel_design import judge_pairs, panel_member
from cj_runner.services.harness import true_reliability
from cj_runner.services.misfit_sim import LATENT_SD, simulation_settings
from cj_runner.services.workflow_setup import workflow_from_settings

__all__ = [
    "MOCK_PANEL",
    "PanelMember",
    "PanelRates",
    "PanelRun",
    "analyse_run",
    "panel_rates",
    "simulate_panel",
    "true_kappa",
]


@dataclass(frozen=True)
class PanelMember:
    """A simulated judge: ``P(A wins) = expit(diff / noise) + position_bias`` clipped to
    [0, 1] (the mock judge's model), or 0.5 whatever the pair when ``erratic``."""

    name: str
    noise: float = 1.0
    position_bias: float = 0.0
    erratic: bool = False
    share: float = 1.0

    def p_a_wins(self, diff: float) -> float:
        """Probability that position A wins when A's true score exceeds B's by ``diff``."""
        if self.erratic:
            return 0.5
        return min(1.0, max(0.0, _expit(diff / self.noise) + self.position_bias))

    def bias_shift(self, diff: float) -> float:
        """What the position bias adds to P(A wins) on this pair (after clipping)."""
        if self.erratic:
            return 0.0
        return self.p_a_wins(diff) - _expit(diff / self.noise)


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


MOCK_PANEL: tuple[PanelMember, ...] = (
    PanelMember("steady", noise=0.8),
    PanelMember("biased", noise=1.2, position_bias=0.05),
    PanelMember("erratic", erratic=True),
)
"""Three judges of equal share: a steady one, a noisier one with a +5 pp position-A bias,
and one answering at random (the panel of ``profiles/judges/mock-panel.yaml``)."""


@dataclass(frozen=True)
class PanelRun:
    """One simulated panel batch: its comparisons, the truth, each judge's true
    position-bias shift (mean over its comparisons of what the bias added to P(A)), and
    for every comparison the true probability that its lower-indexed essay won."""

    data: PanelComparisons
    truth: np.ndarray
    true_shift: np.ndarray
    p_lower: np.ndarray = field(default_factory=lambda: np.zeros(0))


def simulate_panel(
    members: Sequence[PanelMember],
    truth: np.ndarray,
    settings: Settings,
    *,
    seed: int,
    double_share: float = 0.0,
) -> PanelRun:
    """Run one synthetic panel batch to its stop (every call succeeds).

    Args:
        members: the judges.
        truth: true scores, one per node.
        settings: CJ settings (budget, strategy, wave size, stopping rules).
        seed: selection seed, the panel's seed and the judges' draws.
        double_share: ``PANEL_DOUBLE_SHARE``: the share of each wave's pairs also asked
            of a second judge.
    """
    n = len(truth)
    budget = settings.MAX_PAIRWISE_COMPARISONS
    # the panel's double share is the simulation's own argument (not PANEL_DOUBLE_SHARE)
    wf = workflow_from_settings(
        settings,
        n_nodes=n,
        seed=seed,
        total_budget=budget,
        n_judges=len(members),
        double_share=double_share,
    )
    shares = [m.share for m in members]
    rng = np.random.default_rng([seed, 0xC0FFEE])
    judges: list[int] = []
    shift: list[float] = []
    p_lower: list[float] = []
    key = 0

    def ask(pair: PlannedPair, judge: int, mode: str) -> None:
        nonlocal key
        wf.count_call()
        key += 1
        diff = float(truth[pair.a] - truth[pair.b])
        member = members[judge]
        winner = "A" if rng.random() < member.p_a_wins(diff) else "B"
        wf.record_success(pair.a, pair.b, winner, mode, key=key)
        judges.append(judge)
        shift.append(member.bias_shift(diff))
        p_a = member.p_a_wins(diff)
        p_lower.append(p_a if pair.a < pair.b else 1.0 - p_a)

    decision = None
    while decision is None or not decision.is_final:
        pairs = wf.plan_wave()
        if not pairs:
            break
        for pair, mode, planned in zip(pairs, wf.wave_modes, wf.wave_judges, strict=True):
            if wf.calls_sent >= budget:
                break
            repeat = wf.repeat_index(pair.a, pair.b)
            judge = (
                planned
                if planned is not None
                else panel_member(shares, seed, str(pair.a), str(pair.b), repeat)
            )
            ask(pair, judge, mode.value)
        decision = wf.end_wave(wf.waves_completed + 1, [(p.a, p.b) for p in pairs]).decision
    first_arr, second_arr, won = wf.comparison_arrays()
    data = PanelComparisons.of(n, len(members), np.asarray(judges), first_arr, second_arr, won)
    j = np.asarray(judges, dtype=np.intp)
    count = np.bincount(j, minlength=len(members))
    true_shift = np.bincount(j, np.asarray(shift), len(members)) / np.maximum(count, 1)
    # comparison_arrays() orders the comparisons by key, as they were asked
    return PanelRun(
        data, np.asarray(truth, dtype=np.float64), true_shift, np.asarray(p_lower, dtype=float)
    )


def true_kappa(run: PanelRun, judge_a: int, judge_b: int) -> float:
    """The kappa two judges' answers have in expectation on the pairs both judged, from the
    simulation's truth: on each shared pair (each judge's first comparison of it, as
    :func:`cj_runner.core.panel.pairwise_kappa` takes) the judges answer independently
    with their true probabilities ``q`` that the lower-indexed essay wins, so the expected
    agreement is the mean of ``q_a q_b + (1 - q_a)(1 - q_b)`` and chance agreement comes
    from the mean ``q`` of each judge (Cohen 1960 with expected shares). ``nan`` below
    :data:`cj_runner.core.panel.KAPPA_MIN_SHARED_EDGES` shared pairs."""
    data = run.data
    lo = np.minimum(data.first, data.second)
    hi = np.maximum(data.first, data.second)
    first_q: list[dict[tuple[int, int], float]] = [{}, {}]
    for k in range(data.first.size):
        j = int(data.judge[k])
        if j in (judge_a, judge_b):
            side = 0 if j == judge_a else 1
            first_q[side].setdefault((int(lo[k]), int(hi[k])), float(run.p_lower[k]))
    shared = sorted(first_q[0].keys() & first_q[1].keys())
    if len(shared) < KAPPA_MIN_SHARED_EDGES:
        return math.nan
    qa = np.array([first_q[0][e] for e in shared])
    qb = np.array([first_q[1][e] for e in shared])
    p_o = float(np.mean(qa * qb + (1 - qa) * (1 - qb)))
    ma, mb = float(np.mean(qa)), float(np.mean(qb))
    p_e = ma * mb + (1 - ma) * (1 - mb)
    return (p_o - p_e) / (1 - p_e) if p_e < 1 else math.nan


@dataclass(frozen=True)
class RunAnalysis:
    """What the panel analysis says about one run, against the simulation's truth."""

    flagged: np.ndarray
    infit_z: np.ndarray
    bias_covered: np.ndarray  # the true shift lies in the judge's 95% interval
    bias_shift: np.ndarray
    true_reliability_all: float
    true_reliability_excluded: float
    ssr_all: float
    ssr_excluded: float
    kappa: np.ndarray  # per pair of judges (i < j, in order): nan below 5 shared pairs
    shared: np.ndarray  # pairs both judges of a pair judged
    true_kappa: np.ndarray  # the kappa expected from the truth on the same pairs


def analyse_run(run: PanelRun) -> RunAnalysis:
    """Fit the panel, flag misfitting judges, refit without them, compare with the truth."""
    data = run.data
    fit: PanelFit = fit_panel(data)
    misfit = judge_misfit(data)
    stats, flagged = misfit.stats, misfit.flagged
    covered = np.zeros(data.n_judges, dtype=bool)
    shift = np.full(data.n_judges, np.nan)
    for k in range(data.n_judges):
        bias = position_bias_pp(data, fit, k)
        if bias is not None:
            shift[k] = bias.shift
            covered[k] = bias.low <= run.true_shift[k] <= bias.high
    change = reliability_without(data, np.where(flagged, 0.0, 1.0), fit_all=fit)
    pairs = judge_pairs(data.n_judges)
    kappa = np.full(len(pairs), np.nan)
    shared = np.zeros(len(pairs))
    for row in pairwise_kappa(data):
        index = pairs.index((row.judge_a, row.judge_b))
        kappa[index], shared[index] = row.kappa, row.shared_edges
    return RunAnalysis(
        flagged=flagged,
        infit_z=stats.infit_z,
        bias_covered=covered,
        bias_shift=shift,
        true_reliability_all=true_reliability(fit.scores, run.truth),
        true_reliability_excluded=true_reliability(change.fit_after.scores, run.truth),
        ssr_all=change.ssr_all,
        ssr_excluded=change.ssr_after,
        kappa=kappa,
        shared=shared,
        true_kappa=np.array([true_kappa(run, i, j) for i, j in pairs]),
    )


@dataclass(frozen=True)
class PanelRates:
    """Rates over seeded replicates, one entry per judge where it says so.

    ``flag_rate``: share of runs in which each judge was flagged. ``bias_coverage``: share
    of runs whose 95% interval of the judge's position bias held its true shift.
    ``mean_bias_shift`` / ``mean_true_shift``: the estimated and true shifts, averaged.
    ``true_reliability_all`` / ``true_reliability_excluded``: mean squared correlation
    with the truth of the scores with every judge and without the flagged ones;
    ``raised_share``: share of runs in which exclusion raised it (runs with nothing
    flagged count as not raised). ``kappa_pairs``: every pair of judges; ``mean_kappa``
    (over the runs with a kappa), ``mean_true_kappa`` (:func:`true_kappa`, over the same
    runs) and ``mean_shared`` (pairs both judged) per pair.
    """

    n: int
    cpe: float
    replicates: int
    names: tuple[str, ...]
    flag_rate: tuple[float, ...]
    bias_coverage: tuple[float, ...]
    mean_bias_shift: tuple[float, ...]
    mean_true_shift: tuple[float, ...]
    true_reliability_all: float
    true_reliability_excluded: float
    raised_share: float
    ssr_all: float
    ssr_excluded: float
    double_share: float = 0.0
    kappa_pairs: tuple[tuple[str, str], ...] = ()
    mean_kappa: tuple[float, ...] = ()
    mean_true_kappa: tuple[float, ...] = ()
    mean_shared: tuple[float, ...] = ()


def panel_rates(
    members: Sequence[PanelMember] = MOCK_PANEL,
    *,
    n: int = 40,
    cpe: float = 20.0,
    replicates: int = 20,
    seed: int = 0,
    strategy: str | None = None,
    latent_sd: float = LATENT_SD,
    double_share: float = 0.0,
    check_share: float | None = None,
) -> PanelRates:
    """Simulate ``replicates`` panel batches and summarise :func:`analyse_run` over them.

    Args:
        members: the judges.
        n: nodes per batch.
        cpe: comparisons per essay (budget ``n * cpe / 2`` calls, all spent).
        replicates: batches.
        seed: seed of the first replicate.
        strategy: ``MATCHING_STRATEGY`` (default: the settings' default).
        latent_sd: SD of the true scores.
        double_share: share of each wave's pairs also asked of a second judge.
        check_share: ``MISFIT_CHECK_SHARE`` (default: the settings' default).
    """
    settings = simulation_settings(n, cpe, strategy, check_share)
    results: list[RunAnalysis] = []
    shifts: list[np.ndarray] = []
    for k in range(replicates):
        truth = np.random.default_rng([seed + k, 0x9A7E]).standard_normal(n) * latent_sd
        run = simulate_panel(members, truth, settings, seed=seed + k, double_share=double_share)
        results.append(analyse_run(run))
        shifts.append(run.true_shift)

    def mean_of(values: Sequence[np.ndarray]) -> tuple[float, ...]:
        return tuple(float(v) for v in np.nanmean(np.asarray(values, dtype=np.float64), axis=0))

    return PanelRates(
        n=n,
        cpe=cpe,
        replicates=replicates,
        names=tuple(m.name for m in members),
        flag_rate=mean_of([r.flagged for r in results]),
        bias_coverage=mean_of([r.bias_covered for r in results]),
        mean_bias_shift=mean_of([r.bias_shift for r in results]),
        mean_true_shift=mean_of(shifts),
        true_reliability_all=float(np.mean([r.true_reliability_all for r in results])),
        true_reliability_excluded=float(np.mean([r.true_reliability_excluded for r in results])),
        raised_share=float(
            np.mean([r.true_reliability_excluded > r.true_reliability_all for r in results])
        ),
        ssr_all=float(np.mean([r.ssr_all for r in results])),
        ssr_excluded=float(np.mean([r.ssr_excluded for r in results])),
        double_share=double_share,
        kappa_pairs=tuple((members[i].name, members[j].name) for i, j in judge_pairs(len(members))),
        mean_kappa=_nanmean_columns([r.kappa for r in results]),
        mean_true_kappa=_nanmean_columns(
            [np.where(np.isfinite(r.kappa), r.true_kappa, np.nan) for r in results]
        ),
        mean_shared=mean_of([r.shared for r in results]),
    )


def _nanmean_columns(values: Sequence[np.ndarray]) -> tuple[float, ...]:
    """Column means over the runs that have a value (nan when none has)."""
    array = np.asarray(values, dtype=np.float64)
    present = np.isfinite(array)
    sums = np.where(present, array, 0.0).sum(axis=0)
    counts = present.sum(axis=0)
    return tuple(float(s / c) if c else math.nan for s, c in zip(sums, counts, strict=True))
