"""What the workflow knows about a batch: the state's fields, the comparisons recorded so
far (with their numpy form, shared by the fit and selection), and the per-wave fit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cj_runner.core.bt import BTFit, fit_bt
from cj_runner.core.continuation import ContinuationLimits
from cj_runner.core.coverage import max_possible_pairs
from cj_runner.core.models import Mode, edge
from cj_runner.core.pairing import OrientationCounts
from cj_runner.core.robust import EmpiricalBayesFit

if TYPE_CHECKING:
    from cj_runner.core.workflow.state import WorkflowState

EXACT_WAVE_SE_MAX_N = 300
"""Per-wave SEs (for the wave's SSR) are computed up to this many nodes."""
WAVE_TOLERANCE = 1e-4
"""Newton tolerance of per-wave fits above ``EXACT_WAVE_SE_MAX_N`` nodes (the largest score
step left when a fit stops): the stability threshold (default 0.05) is 500 times larger.
It was 1e-6; the last Newton iterations cost about a sixth of the per-wave fits of a
2,000-essay batch (docs/performance.md)."""

RobustReliabilityFn = Callable[["WorkflowState", BTFit], tuple[float | None, float | None]]
"""After a fit: the design-robust reliability and its posterior SD (``None`` when not
computed)."""


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
class _WorkflowRecord:
    """The fields of :class:`~cj_runner.core.workflow.WorkflowState` (documented there),
    the comparisons it records and its fit."""

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
    check_share: float = 0.0
    anchor_grades: Mapping[int, int] = field(default_factory=dict)
    n_grades: int = 0
    wave_modes: list[Mode] = field(default_factory=list)
    selection_scores: np.ndarray | None = None
    order_effect: bool = False
    n_judges: int = 1
    double_share: float = 0.0
    wave_judges: list[int | None] = field(default_factory=list)
    doubles_planned: int = 0
    anchor_weight: float = 1.0

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
