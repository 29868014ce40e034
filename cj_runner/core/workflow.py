"""The CJ workflow as a pure state machine: plan a wave, record results, end the wave.

Both the executor (with a judge, a database and concurrency around it) and the
convergence harness (a simulated judge in memory) drive this one class, so selection,
continuation and scoring are the same code in both.

A wave: :meth:`WorkflowState.plan_wave` picks the ordered pairs; the caller asks the
judge and reports every outcome with :meth:`record_success` / :meth:`record_failure`
(and every call sent with :meth:`count_call`); :meth:`end_wave` refits the scores (warm
start), applies the continuation decision (spec §5) and moves to the next mode.

Issue 8 extensions, all off by default (the default settings select, fit and decide
exactly as before):

* ``audit_share > 0``: each wave spends that share of its pairs (on average; the
  fraction is a seeded coin per wave) on *audit* pairs, uniformly random over all edges
  not chosen in the wave (and, while resampling, not in the pass), recorded with
  :attr:`Mode.AUDIT`; :attr:`WorkflowState.wave_modes` gives the mode of every planned
  pair. Audits are held-out, design-independent checks of the fit
  (:mod:`cj_runner.core.robust`).
* ``strategy="infogain"`` or ``"grade_boundary"``: selection works on the
  empirical-Bayes posterior (:func:`cj_runner.core.robust.empirical_bayes_fit`: its
  mode as the scores, its prior precision, its SEs) instead of the weak-ridge fit,
  whose scale spreads out under adaptive designs and would make the predicted win
  probabilities too extreme. With ``anchor_grades``, ``grade_boundary`` also gets the
  per-node weights of :func:`cj_runner.core.strategies.grade_weights` from that
  posterior. Both are recomputed from the stored comparisons, so a resumed batch selects
  what an uninterrupted one would.
* ``robust_reliability_fn``: called after every fit; :func:`robust_reliability_hook`
  builds the default one (the posterior reliability of :mod:`cj_runner.core.robust`).

Panels (off by default): with ``n_judges >= 2`` and ``double_share > 0``, that share of
each wave's pairs (on average; audit pairs excluded) is also asked of a second judge, as
the pair's complement ``(b, a)``: the wave then holds the pair twice, and
:attr:`WorkflowState.wave_judges` names the judge of both asks (``None`` for the other
pairs: the panel's seeded choice). The second asks come last, count against the wave's
size and the budget like any comparison, and are drawn from a separate random stream, so
a panel without them selects exactly the same pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.special

from cj_runner.core.bt import BTFit, fit_bt, max_score_change
from cj_runner.core.continuation import (
    Action,
    ContinuationContext,
    ContinuationLimits,
    Decision,
    StopReason,
    decide,
)
from cj_runner.core.coverage import max_possible_pairs
from cj_runner.core.models import Mode, PlannedPair, edge
from cj_runner.core.pairing import OrientationCounts, PairingState, select_pairs
from cj_runner.core.panel_design import assign_doubles, double_count, judge_pair_order
from cj_runner.core.reliability import scale_separation_reliability
from cj_runner.core.robust import (
    EmpiricalBayesFit,
    empirical_bayes_fit,
    empirical_bayes_prior_sd,
    robust_reliability,
)
from cj_runner.core.strategies import COVARIANCE_MAX_N, grade_weights

EXACT_WAVE_SE_MAX_N = 300
"""Per-wave SEs (for the wave's SSR) are computed up to this many nodes."""
WAVE_TOLERANCE = 1e-4
"""Newton tolerance of per-wave fits above ``EXACT_WAVE_SE_MAX_N`` nodes (the largest score
step left when a fit stops): the stability threshold (default 0.05) is 500 times larger.
It was 1e-6; the last Newton iterations cost about a sixth of the per-wave fits of a
2,000-essay batch (docs/performance.md)."""

ADAPTIVE_STRATEGIES: tuple[str, ...] = ("infogain", "grade_boundary")
"""Strategies that select on the empirical-Bayes posterior."""

_AUDIT_STREAM = 0xA0D17  # a separate random stream: audits never shift the main selection
_DOUBLE_STREAM = 0xD0B1E  # the same for the pairs asked of two judges


@dataclass(frozen=True)
class WaveEnd:
    """What ending a wave produced."""

    decision: Decision
    max_score_change: float | None
    ssr: float | None
    fit: BTFit | None
    successes: int
    robust_reliability: float | None = None


RobustReliabilityFn = Callable[["WorkflowState", BTFit], float | None]


class _ComparisonBuffers:
    """The successes as numpy arrays, grown as :class:`WorkflowState`'s lists grow."""

    def __init__(self, source: list[int]) -> None:
        self.source = source  # the keys list these buffers mirror
        self.size = 0
        self.in_order = True  # keys non-decreasing so far (a stable sort changes nothing)
        self.keys = np.zeros(0, dtype=np.int64)
        self.first = np.zeros(0, dtype=np.int64)
        self.second = np.zeros(0, dtype=np.int64)
        self.won = np.zeros(0, dtype=bool)

    def extend(self, keys: list[int], first: list[int], second: list[int], won: list[bool]) -> None:
        m, k = len(keys), self.size
        if m > self.keys.size:
            capacity = max(m, 2 * self.keys.size, 64)
            for name in ("keys", "first", "second", "won"):
                old = getattr(self, name)
                grown = np.zeros(capacity, dtype=old.dtype)
                grown[:k] = old[:k]
                setattr(self, name, grown)
        self.keys[k:m] = keys[k:m]
        self.first[k:m] = first[k:m]
        self.second[k:m] = second[k:m]
        self.won[k:m] = won[k:m]
        if m > k and self.in_order:
            tail = self.keys[max(k - 1, 0) : m]
            self.in_order = bool(np.all(tail[1:] >= tail[:-1]))
        self.size = m

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies in key order (a stable sort when the keys came out of order)."""
        m = self.size
        if self.in_order:
            return self.first[:m].copy(), self.second[:m].copy(), self.won[:m].copy()
        order = np.argsort(self.keys[:m], kind="stable")
        return self.first[:m][order], self.second[:m][order], self.won[:m][order]


@dataclass
class WorkflowState:
    """Everything the workflow knows about a batch between judge calls.

    Attributes:
        n_nodes: nodes in the batch (students and anchors).
        n_students: student essays (anchors excluded), for the small-net rule.
        total_budget: most calls the batch may send.
        limits: the continuation settings.
        wave_size: ``COMPARISONS_PER_STABILITY_CHECK_ITERATION``.
        strategy: the matching strategy name.
        seed: the batch seed; wave ``k`` uses ``default_rng([seed, k])`` so a resumed
            batch selects exactly what an uninterrupted one would.
        prior_precision: ridge of the Bradley-Terry fit.
        min_resampling_net_size: ``MIN_RESAMPLING_NET_SIZE``.
        audit_share: ``AUDIT_SHARE``, the share of each wave spent on audit pairs.
        anchor_grades: anchor node -> known grade index (0 = lowest), for
            ``grade_boundary``.
        n_grades: grades on the scale, for ``grade_boundary``.
        robust_reliability_fn: computes the design-robust reliability after every fit
            (the ``TARGET_RELIABILITY`` rule needs it); see :func:`robust_reliability_hook`.
        wave_modes: the mode of every pair of the last planned wave, in order.
        selection_scores: fixed scores that selection uses instead of the fit (the
            benchmark's oracle: pairing on the true qualities); ``None`` in real batches.
        order_effect: the per-wave fits (progress, stability, SSR) include the order
            effect, as the final fit does with ``FIT_ORDER_EFFECT``.
        n_judges: judges of a panel batch (1: one judge, no second asks).
        double_share: ``PANEL_DOUBLE_SHARE``, the share of each wave's pairs also asked
            of a second judge (panels only).
        wave_judges: the judge index of every pair of the last planned wave, in order
            (``None``: the panel's seeded choice; set for doubled pairs and their
            second asks).
        doubles_planned: pairs asked of two judges in the waves planned so far (they go
            round the pairs of judges in turn; a resumed batch counts its stored ones).
    """

    n_nodes: int
    n_students: int
    total_budget: int
    limits: ContinuationLimits
    wave_size: int
    strategy: str = "balanced"
    seed: int = 0
    prior_precision: float = 0.01
    min_resampling_net_size: int = 10
    mode: Mode = Mode.COVERAGE
    waves_completed: int = 0
    pass_count: int = 0
    pass_remaining: set[tuple[int, int]] = field(default_factory=set)
    calls_sent: int = 0
    successes: int = 0
    failures: int = 0
    cost_usd: float = 0.0
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    have_fit: bool = False
    first: list[int] = field(default_factory=list)
    second: list[int] = field(default_factory=list)
    first_won: list[bool] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)
    robust_reliability_fn: RobustReliabilityFn | None = None
    audit_share: float = 0.0
    anchor_grades: Mapping[int, int] = field(default_factory=dict)
    n_grades: int = 0
    wave_modes: list[Mode] = field(default_factory=list)
    selection_scores: np.ndarray | None = None
    order_effect: bool = False
    n_judges: int = 1
    double_share: float = 0.0
    wave_judges: list[int | None] = field(default_factory=list)
    doubles_planned: int = 0

    def __post_init__(self) -> None:
        n = self.n_nodes
        self.a_counts = np.zeros(n, dtype=np.int64)
        self.b_counts = np.zeros(n, dtype=np.int64)
        self.ordered_counts: dict[tuple[int, int], int] = {}
        self.edges: set[tuple[int, int]] = set()
        # kept across waves for selection (no n x n structure, nothing rebuilt per wave)
        self.neighbours: list[set[int]] = [set() for _ in range(n)]
        self.degree = np.zeros(n, dtype=np.int64)
        self.orientation_counts = OrientationCounts(self.ordered_counts, self.edges)
        if self.scores.shape != (n,):
            self.scores = np.zeros(n)
        self._wave_start_successes = 0
        self._posterior: tuple[int, EmpiricalBayesFit] | None = None
        self._tau: tuple[np.ndarray, float] | None = None
        self._arrays: tuple[int, list[int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._buffers: _ComparisonBuffers | None = None
        self._selection: tuple[tuple[int, float], tuple[np.ndarray, np.ndarray, float]] | None = (
            None
        )

    # ------------------------------------------------------------------ facts

    @property
    def is_small_net(self) -> bool:
        """``expected_essay_count <= MIN_RESAMPLING_NET_SIZE`` (students only)."""
        return self.n_students <= self.min_resampling_net_size

    @property
    def max_possible_pairs(self) -> int:
        return max_possible_pairs(self.n_nodes)

    @property
    def successful_pairs_count(self) -> int:
        return len(self.edges)

    @property
    def budget_left(self) -> int:
        return max(0, self.total_budget - self.calls_sent)

    def repeat_index(self, a: int, b: int) -> int:
        """How often the ordered pair ``(a, b)`` succeeded before (the cache's repeat)."""
        return self.ordered_counts.get((a, b), 0)

    # ------------------------------------------------------------------ events

    def count_call(self) -> int:
        """Count one call sent against the budget; returns its number (1-based)."""
        self.calls_sent += 1
        return self.calls_sent

    def record_success(
        self, a: int, b: int, winner: str, mode: str = "coverage", key: int | None = None
    ) -> None:
        """A comparison succeeded: ``winner`` is ``"A"`` (node ``a``) or ``"B"``.

        ``key`` (e.g. the stored slot number) fixes the order in which comparisons enter
        the fit, so a resumed batch fits exactly what an uninterrupted one did, whatever
        order the answers arrived in.
        """
        self.keys.append(len(self.keys) if key is None else key)
        self.first.append(a)
        self.second.append(b)
        self.first_won.append(winner == "A")
        self.modes.append(mode)
        self.a_counts[a] += 1
        self.b_counts[b] += 1
        self.ordered_counts[(a, b)] = self.ordered_counts.get((a, b), 0) + 1
        e = edge(a, b)
        if e not in self.edges:
            self.edges.add(e)
            self.neighbours[a].add(b)
            self.neighbours[b].add(a)
            self.degree[a] += 1
            self.degree[b] += 1
        self.successes += 1

    def record_failure(self) -> None:
        """A comparison failed for good (its retries used up, or a permanent error)."""
        self.failures += 1

    # ------------------------------------------------------------------ waves

    def plan_wave(
        self, wave_no: int | None = None, pending: Sequence[tuple[int, int]] = ()
    ) -> list[PlannedPair]:
        """The ordered pairs of the next wave (empty: the mode can produce no pair).

        :attr:`wave_modes` is set to the mode of each pair (the current mode, or
        :attr:`Mode.AUDIT` for the audit pairs, which come after the others), and
        :attr:`wave_judges` to its judge (see the module docstring: a panel's second
        asks come last, each the complement of a pair of the wave).

        Pipelined waves (spec §5a): ``wave_no`` (default: the wave after the last closed
        one) seeds the wave's generator, and ``pending`` lists the ordered pairs of the
        waves planned earlier and not closed yet. They count as calls in flight: each
        takes one call of the budget, its edge is no candidate and is not asked again in
        the pass, and its nodes' A/B counts include it, as if it had been answered.
        """
        self.wave_modes = []
        self.wave_judges = []
        size = min(self.wave_size, self.budget_left - len(pending))
        if size <= 0:
            return []
        scores, se, precision = self.scores, None, self.prior_precision
        weights = None
        if self.selection_scores is not None:
            scores = np.asarray(self.selection_scores, dtype=float)
        elif self.strategy in ADAPTIVE_STRATEGIES and self.successes:
            if self.n_nodes > COVARIANCE_MAX_N:
                scores, se, precision = self._large_net_posterior()
            else:
                eb = self.posterior()
                scores = np.asarray(eb.fit.scores)
                se = None if eb.fit.se is None else np.asarray(eb.fit.se)
                precision = 1.0 / eb.prior_sd**2
            weights = self._grade_uncertainty(scores, se)
        a_counts = self.a_counts.copy()
        b_counts = self.b_counts.copy()
        flying: set[tuple[int, int]] = set()
        for a, b in pending:
            a_counts[a] += 1
            b_counts[b] += 1
            flying.add(edge(a, b))
        remaining = self.pass_remaining
        if flying and remaining:
            remaining = remaining - flying
        state = PairingState(
            n_nodes=self.n_nodes,
            scores=scores,
            a_counts=a_counts,
            b_counts=b_counts,
            orientation_counts=self.orientation_counts,
            in_flight=frozenset(flying),
            pass_remaining=frozenset(remaining),
            neighbours=self.neighbours,
            degree=self.degree,
            se=se,
            grade_uncertainty=weights,
            prior_precision=precision,
        )
        wave = self.waves_completed + 1 if wave_no is None else wave_no
        rng = np.random.default_rng([self.seed, wave])
        self._wave_start_successes = self.successes
        n_double = 0
        doubling = self.double_share > 0 and self.n_judges >= 2
        if doubling:
            double_rng = np.random.default_rng([self.seed, wave, _DOUBLE_STREAM])
            n_double = double_count(size, self.double_share, double_rng)
            size -= n_double
        n_audit = 0
        if self.audit_share > 0:
            audit_rng = np.random.default_rng([self.seed, wave, _AUDIT_STREAM])
            expected = self.audit_share * size
            n_audit = min(size - 1, int(expected) + int(audit_rng.random() < expected % 1))
        pairs = select_pairs(state, self.mode, size - n_audit, rng, strategy=self.strategy)
        n_main = len(pairs)
        self.wave_modes = [self.mode] * len(pairs)
        if pairs and n_audit > 0:
            audits = self._audit_pairs(state, pairs, n_audit, audit_rng)
            pairs += audits
            self.wave_modes += [Mode.AUDIT] * len(audits)
        self.wave_judges = [None] * len(pairs)
        if doubling and pairs:
            self._add_doubles(pairs, n_main, n_double, double_rng)
        return pairs

    def _add_doubles(
        self, pairs: list[PlannedPair], n_main: int, n_double: int, rng: np.random.Generator
    ) -> None:
        """Append the second asks of ``n_double`` of the first ``n_main`` pairs (fewer when
        the mode found fewer pairs than the wave had room for)."""
        n_double = min(n_double, math.ceil(self.double_share * n_main))
        order = judge_pair_order(self.n_judges, self.seed)
        doubles = assign_doubles(n_main, n_double, order, self.doubles_planned, rng)
        self.doubles_planned += len(doubles)
        for index, first, second in doubles:
            pair = pairs[index]
            self.wave_judges[index] = first
            pairs.append(PlannedPair(pair.b, pair.a))
            self.wave_modes.append(self.wave_modes[index])
            self.wave_judges.append(second)

    def _audit_pairs(
        self,
        state: PairingState,
        chosen: Sequence[PlannedPair],
        k: int,
        rng: np.random.Generator,
    ) -> list[PlannedPair]:
        """``k`` uniformly random audit pairs, none chosen in the wave or in the pass."""
        a_counts = state.a_counts.copy()
        b_counts = state.b_counts.copy()
        for p in chosen:
            a_counts[p.a] += 1
            b_counts[p.b] += 1
        blocked = {p.edge for p in chosen} | state.in_flight
        if self.mode == Mode.RESAMPLING:
            blocked |= self.pass_remaining
        audit_state = replace(
            state, a_counts=a_counts, b_counts=b_counts, in_flight=frozenset(blocked)
        )
        return select_pairs(audit_state, Mode.AUDIT, k, rng)

    def _grade_uncertainty(self, scores: np.ndarray, se: np.ndarray | None) -> np.ndarray | None:
        """``grade_boundary`` weights from the posterior (``None``: uniform)."""
        if self.strategy != "grade_boundary" or not self.anchor_grades or se is None:
            return None
        anchors = sorted(self.anchor_grades)
        return grade_weights(
            scores, np.square(se), anchors, [self.anchor_grades[a] for a in anchors], self.n_grades
        )

    def posterior(self) -> EmpiricalBayesFit:
        """The empirical-Bayes posterior of the successes so far (cached until the next one)."""
        if self._posterior is None or self._posterior[0] != len(self.keys):
            first, second, first_won = self.comparison_arrays()
            self._posterior = (
                len(self.keys),
                empirical_bayes_fit(self.n_nodes, first, second, first_won),
            )
        return self._posterior[1]

    def _large_net_posterior(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Selection's posterior above ``COVARIANCE_MAX_N`` nodes, in ``O(comparisons)``.

        The prior spread ``tau`` is the empirical-Bayes one
        (:func:`cj_runner.core.robust.empirical_bayes_prior_sd`) of the first ``2^j``
        comparisons in key order (the largest power of two so far), so it is recomputed
        a dozen times in a batch of thousands of comparisons, and a resumed batch gets
        the same value. Each wave then refits the mode at precision ``1 / tau^2`` (warm
        start) and takes the variances ``1 / (information_i + 1 / tau^2)``.
        """
        first, second, first_won = self.comparison_arrays()
        m = first.size
        cut = 1 << (m.bit_length() - 1)
        prefix = np.sort(np.asarray(self.keys, dtype=np.int64))[:cut]
        cached = self._tau
        if cached is None or not np.array_equal(cached[0], prefix):
            tau = empirical_bayes_prior_sd(self.n_nodes, first[:cut], second[:cut], first_won[:cut])
            self._tau = cached = (prefix, tau)
        precision = 1.0 / cached[1] ** 2
        if self._selection is not None and self._selection[0] == (m, precision):
            return self._selection[1]
        init = None if self._selection is None else self._selection[1][0]
        fit = fit_bt(
            self.n_nodes,
            first,
            second,
            first_won,
            prior_precision=precision,
            init=init,
            compute_se=False,
            tolerance=self._wave_tolerance(),
        )
        s = np.asarray(fit.scores, dtype=float)
        p = scipy.special.expit(s[first] - s[second])
        w = p * (1.0 - p)
        info = np.bincount(first, w, self.n_nodes) + np.bincount(second, w, self.n_nodes)
        result = (s, 1.0 / np.sqrt(info + precision), precision)
        self._selection = ((m, precision), result)
        return result

    def comparison_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(first, second, first_won)`` of the successes, in key order.

        Built once per number of successes and read-only, so the wave's refit and its
        selection share them, and with them the fit's prepared form
        (:func:`cj_runner.core.bt.fit_bt` reuses it for the same read-only arrays). The
        lists only grow: only the successes added since the last call are converted, and
        the sort is skipped while the keys arrive in order (as they do in a run).
        """
        m = len(self.keys)
        cached = self._arrays
        if cached is not None and cached[0] == m and cached[1] is self.keys:
            return cached[2]
        buffers = self._buffers
        if buffers is None or buffers.source is not self.keys or buffers.size > m:
            buffers = self._buffers = _ComparisonBuffers(self.keys)
        buffers.extend(self.keys, self.first, self.second, self.first_won)
        arrays = buffers.arrays()
        for array in arrays:
            array.setflags(write=False)
        self._arrays = (m, self.keys, arrays)
        return arrays

    def comparison_modes(self) -> list[str]:
        """The mode of every success, in the key order of :meth:`comparison_arrays`."""
        order = np.argsort(np.asarray(self.keys, dtype=np.int64), kind="stable")
        return [self.modes[i] for i in order]

    def fit(
        self, *, compute_se: bool, order_effect: bool = False, tolerance: float = 1e-9
    ) -> BTFit:
        """Bradley-Terry fit of the successful comparisons (warm start from the last fit)."""
        first, second, first_won = self.comparison_arrays()
        return fit_bt(
            self.n_nodes,
            first,
            second,
            first_won,
            order_effect=order_effect,
            prior_precision=self.prior_precision,
            init=self.scores if self.have_fit else None,
            compute_se=compute_se,
            tolerance=tolerance,
        )

    def _wave_tolerance(self) -> float:
        """Newton tolerance of the per-wave refits and of selection's posterior mode above
        ``EXACT_WAVE_SE_MAX_N`` nodes (iterative solves): ``1e-4``, or a hundredth of the
        stability threshold when that is smaller, so a score change is measured to well
        within the threshold; else the default ``1e-9``. The final fit is always the
        default, exact one."""
        if self.n_nodes <= EXACT_WAVE_SE_MAX_N:
            return 1e-9
        threshold = self.limits.score_stability_threshold
        return min(WAVE_TOLERANCE, threshold / 100) if threshold > 0 else WAVE_TOLERANCE

    def context(
        self, max_change: float | None, robust: float | None = None, max_se: float | None = None
    ) -> ContinuationContext:
        """The continuation context of spec §5 for the batch as it stands."""
        return ContinuationContext(
            finished_comparisons=self.successes + self.failures,
            successes=self.successes,
            failures=self.failures,
            calls_sent=self.calls_sent,
            total_budget=self.total_budget,
            waves_completed=self.waves_completed,
            max_possible_pairs=self.max_possible_pairs,
            successful_pairs_count=self.successful_pairs_count,
            is_small_net=self.is_small_net,
            resampling_pass_count=self.pass_count,
            pass_in_progress=bool(self.pass_remaining),
            max_score_change=max_change,
            robust_reliability=robust,
            max_se=max_se,
            cost_usd=self.cost_usd,
        )

    def end_wave(self, wave_no: int, asked: Iterable[tuple[int, int]]) -> WaveEnd:
        """Close wave ``wave_no``: refit, decide, start a pass or switch mode."""
        self.waves_completed = wave_no
        if self.mode == Mode.RESAMPLING:
            self.pass_remaining.difference_update(edge(a, b) for a, b in asked)
        fit: BTFit | None = None
        max_change: float | None = None
        ssr: float | None = None
        max_se: float | None = None
        robust: float | None = None
        if self.successes:
            need_se = self.n_nodes <= EXACT_WAVE_SE_MAX_N or self.limits.target_max_se is not None
            fit = self.fit(
                compute_se=need_se,
                order_effect=self.order_effect and self.successes >= 2,
                tolerance=self._wave_tolerance(),
            )
            if self.have_fit:
                max_change = max_score_change(self.scores, fit.scores)
            self.scores = np.asarray(fit.scores, dtype=float)
            self.have_fit = True
            if fit.se is not None:
                value = scale_separation_reliability(fit.scores, fit.se)
                ssr = value if math.isfinite(value) else None
                max_se = float(np.max(fit.se))
            if self.robust_reliability_fn is not None:
                robust = self.robust_reliability_fn(self, fit)
        decision = decide(self.context(max_change, robust, max_se), self.limits)
        self.apply(decision)
        return WaveEnd(
            decision=decision,
            max_score_change=max_change,
            ssr=ssr,
            fit=fit,
            successes=self.successes - self._wave_start_successes,
            robust_reliability=robust,
        )

    def apply(self, decision: Decision) -> None:
        """Follow a decision: start a resampling pass, or set the next wave's mode."""
        if decision.action == Action.RESAMPLE:
            if decision.starts_new_pass:
                self.pass_count += 1
                self.pass_remaining = set(self.edges)
            self.mode = Mode.RESAMPLING
        elif decision.action == Action.REQUEST_MORE_COMPARISONS:
            self.mode = Mode.COVERAGE


def robust_reliability_hook(
    nodes: Sequence[int] | None = None, method: str = "posterior"
) -> RobustReliabilityFn:
    """A :data:`RobustReliabilityFn` for :attr:`WorkflowState.robust_reliability_fn`.

    It runs :func:`cj_runner.core.robust.robust_reliability` on the batch's successful
    comparisons (with their modes, the batch seed and the fit's ridge) over ``nodes``
    (e.g. the students; default all nodes).
    """
    subset = None if nodes is None else [int(i) for i in nodes]

    def hook(state: WorkflowState, fit: BTFit) -> float | None:
        first, second, first_won = state.comparison_arrays()
        result = robust_reliability(
            state.n_nodes,
            first,
            second,
            first_won,
            modes=state.comparison_modes(),
            seed=state.seed,
            prior_precision=state.prior_precision,
            nodes=subset,
            method=method,
            posterior=state.posterior() if method == "posterior" else None,
        )
        return result.value

    return hook


def exhausted_decision() -> Decision:
    """Stop: the chosen mode can produce no pair."""
    return Decision(Action.FINALIZE_SCORING, StopReason.EXHAUSTED)
