"""Planning a wave: the pairs (main, audit, a panel's second asks) and the posterior the
adaptive strategies select on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import scipy.special

from cj_runner.core.bt import fit_bt
from cj_runner.core.misfit_checks import check_pairs
from cj_runner.core.models import Mode, PlannedPair, edge
from cj_runner.core.pairing import PairingState, select_pairs
from cj_runner.core.panel_design import assign_doubles, double_count, judge_pair_order
from cj_runner.core.robust import (
    EmpiricalBayesFit,
    empirical_bayes_fit,
    empirical_bayes_prior_sd,
)
from cj_runner.core.strategies import COVARIANCE_MAX_N, grade_weights
from cj_runner.core.workflow.record import _WorkflowRecord

ADAPTIVE_STRATEGIES: tuple[str, ...] = ("infogain", "grade_boundary")
"""Strategies that select on the empirical-Bayes posterior."""

_AUDIT_STREAM = 0xA0D17  # a separate random stream: audits never shift the main selection
_DOUBLE_STREAM = 0xD0B1E  # the same for the pairs asked of two judges
_CHECK_STREAM = 0xC4EC5  # and for the check pairs


class _WorkflowSelection(_WorkflowRecord):
    """Planning the next wave (:meth:`plan_wave`) on the recorded state."""

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
            node_weight=self.node_weight(),
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
        n_check = 0
        if self.check_share > 0 and self.successes and self.checks_needed():
            check_rng = np.random.default_rng([self.seed, wave, _CHECK_STREAM])
            expected = self.check_share * size
            n_check = int(expected) + int(check_rng.random() < expected % 1)
            n_check = max(0, min(size - 1 - n_audit, n_check))
        pairs = select_pairs(
            state, self.mode, size - n_audit - n_check, rng, strategy=self.strategy
        )
        n_main = len(pairs)
        if pairs and n_check > 0:
            pairs += self._check_pairs(state, pairs, n_check, pending, check_rng)
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

    def checks_needed(self) -> bool:
        """Whether check pairs are asked: only when the budget cannot ask every pair.

        A batch whose budget reaches every pair of the net (``total_budget >=
        max_possible_pairs``: small nets, the reference shapes of spec §11) compares every
        essay with both ends of the scale in coverage anyway; check pairs there would only
        delay the coverage (and the stability stop that waits for it)."""
        return self.total_budget < self.max_possible_pairs

    def _after(
        self, state: PairingState, chosen: Sequence[PlannedPair]
    ) -> tuple[np.ndarray, np.ndarray, set[tuple[int, int]]]:
        """The A/B counts with the wave's ``chosen`` pairs added, and the edges the pairs
        added after them may not take (chosen, in flight, and the pass while resampling)."""
        a_counts = state.a_counts.copy()
        b_counts = state.b_counts.copy()
        for p in chosen:
            a_counts[p.a] += 1
            b_counts[p.b] += 1
        blocked = {p.edge for p in chosen} | state.in_flight
        if self.mode == Mode.RESAMPLING:
            blocked |= self.pass_remaining
        return a_counts, b_counts, blocked

    def _audit_pairs(
        self,
        state: PairingState,
        chosen: Sequence[PlannedPair],
        k: int,
        rng: np.random.Generator,
    ) -> list[PlannedPair]:
        """``k`` uniformly random audit pairs, none chosen in the wave or in the pass."""
        a_counts, b_counts, blocked = self._after(state, chosen)
        audit_state = replace(
            state, a_counts=a_counts, b_counts=b_counts, in_flight=frozenset(blocked)
        )
        return select_pairs(audit_state, Mode.AUDIT, k, rng)

    def _check_pairs(
        self,
        state: PairingState,
        chosen: Sequence[PlannedPair],
        k: int,
        pending: Sequence[tuple[int, int]],
        rng: np.random.Generator,
    ) -> list[PlannedPair]:
        """``k`` check pairs (:func:`cj_runner.core.misfit_checks.check_pairs`) on the
        empirical-Bayes posterior, none chosen in the wave, in flight or in the pass."""
        if self.n_nodes > COVARIANCE_MAX_N:
            scores, _, precision = self._large_net_posterior()
            tau = 1.0 / math.sqrt(precision)
        else:
            eb = self.posterior()
            scores, tau = np.asarray(eb.fit.scores), eb.prior_sd
        a_counts, b_counts, blocked = self._after(state, chosen)
        first, second, first_won = self.comparison_arrays()
        return check_pairs(
            self.n_nodes,
            first,
            second,
            first_won,
            scores,
            tau,
            k,
            a_counts=a_counts,
            b_counts=b_counts,
            orientation_counts=state.orientation_counts,
            blocked=blocked,
            pending=[*pending, *((p.a, p.b) for p in chosen)],
            rng=rng,
        )

    def node_weight(self) -> np.ndarray | None:
        """Per node selection weight: ``anchor_weight`` on the anchors, 1 on the students;
        ``None`` (every node alike, today's selection exactly) with weight 1 or no anchors."""
        if self.anchor_weight == 1.0 or not self.anchor_grades:
            return None
        weight = np.ones(self.n_nodes, dtype=float)
        weight[sorted(self.anchor_grades)] = self.anchor_weight
        return weight

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
