"""Pair generation (spec §6): the candidates of each mode, a matching strategy, and the
fair complement orientation.

:func:`select_pairs` is the only entry point the workflow needs. It works in three steps:

1. **Candidates** for the mode, as an ``n x n`` boolean matrix. ``coverage``: edges with
   no successful comparison (an edge whose attempts all failed is a candidate again).
   ``resampling``: only the edges of the current pass not yet asked in it
   (``pass_remaining``), never a new edge; each node appears at most
   :func:`resampling_node_cap` times in one wave. ``audit``: every edge, uniformly at
   random (held-out audit pairs, issue 8). In every mode an edge with a call in flight is
   never a candidate, and one wave never holds the same edge twice.
2. **Edges**: the matching strategy (:mod:`cj_runner.core.strategies`) picks at most
   ``wave_size`` of them. ``audit`` always draws uniformly, whatever the strategy.
3. **Orientation** of each chosen edge, in the order chosen, with the A/B counts updated
   after every pair of the wave: an edge asked as ``(a, b)`` more often than ``(b, a)``
   (successful comparisons) is next asked as ``(b, a)``; otherwise the orientation that
   shrinks the larger absolute A/B imbalance (``A - B``) of its two nodes wins (then the
   smaller sum of both imbalances); a remaining tie is a seeded coin.

All randomness comes from the ``rng`` argument, so the same state and generator state
give the same wave; ties are never broken by node id.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt

from cj_runner.core.candidates import CandidateGraph
from cj_runner.core.models import Mode, PlannedPair
from cj_runner.core.strategies import COVARIANCE_MAX_N, REGISTRY, SelectionProblem
from cj_runner.core.strategies.adaptive import _MIN_PRECISION, _pq

__all__ = [
    "STRATEGIES",
    "OrientationCounts",
    "PairingState",
    "orient",
    "orientation_matrix",
    "resampling_node_cap",
    "select_pairs",
]

STRATEGIES: tuple[str, ...] = tuple(REGISTRY)
"""Names accepted by :func:`select_pairs` (``MATCHING_STRATEGY``)."""


@dataclass(frozen=True)
class PairingState:
    """What pair selection knows about a batch before a wave.

    Attributes:
        n_nodes: nodes in the batch (students and anchors), indices ``0..n-1``.
        scores: current BT scores (zeros before the first fit).
        a_counts: per node, successful comparisons in position A.
        b_counts: per node, successful comparisons in position B.
        orientation_counts: edge ``(lo, hi)`` -> (successful comparisons asked as
            ``(lo, hi)``, asked as ``(hi, lo)``); an edge is "compared" iff it is present
            with a positive sum.
        in_flight: edges with a call under way: never candidates.
        pass_remaining: resampling: edges of the current pass not yet asked in it.
        se: standard errors of the scores (adaptive strategies), optional.
        grade_uncertainty: per node weight ``>= 0`` (``grade_boundary``), optional; see
            :func:`cj_runner.core.strategies.grade_weights`.
        orientation_matrix: optional ``n x n`` integer matrix, ``[a, b]`` = successful
            comparisons asked as ``(a, b)``; when given it must agree with
            ``orientation_counts`` and is used instead of it to find compared edges
            (see :func:`orientation_matrix`).
        prior_precision: ridge of the Bradley-Terry fit (``infogain``, ``grade_boundary``).
        neighbours: optional, per node the nodes it has a successful comparison with
            (must agree with ``orientation_counts``), with ``degree`` their sizes; a
            caller that keeps them across waves (:class:`~cj_runner.core.workflow.
            WorkflowState`) saves rebuilding them, so a coverage wave of the greedy
            strategies costs ``O(n)`` per pair, whatever the comparisons so far.
        degree: ``len(neighbours[i])`` for every node (with ``neighbours``).
        node_weight: optional per node selection weight ``>= 1`` (``ANCHOR_WEIGHT`` on the
            anchors; :class:`~cj_runner.core.strategies.SelectionProblem` says how each
            strategy uses it); ``None``: every node alike. Audit pairs ignore it.
    """

    n_nodes: int
    scores: np.ndarray
    a_counts: np.ndarray
    b_counts: np.ndarray
    orientation_counts: Mapping[tuple[int, int], tuple[int, int]]
    in_flight: frozenset[tuple[int, int]] = frozenset()
    pass_remaining: frozenset[tuple[int, int]] = frozenset()
    se: np.ndarray | None = None
    grade_uncertainty: np.ndarray | None = None
    orientation_matrix: np.ndarray | None = None
    prior_precision: float = 0.01
    neighbours: Sequence[Collection[int]] | None = None
    degree: np.ndarray | None = None
    node_weight: np.ndarray | None = None


class OrientationCounts(Mapping[tuple[int, int], tuple[int, int]]):
    """``orientation_counts`` as a live view of per-ordered-pair counts (no copy per wave).

    ``ordered`` maps ``(a, b)`` to the successful comparisons asked as ``(a, b)``;
    ``edges`` is the set of compared edges ``(lo, hi)``. Both are read, never copied, so
    a caller that updates them as answers arrive hands selection an up-to-date mapping
    in ``O(1)``.
    """

    def __init__(
        self, ordered: Mapping[tuple[int, int], int], edges: Collection[tuple[int, int]]
    ) -> None:
        self._ordered = ordered
        self._edges = edges

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
        if key not in self._edges:
            raise KeyError(key)
        lo, hi = key
        return self._ordered.get((lo, hi), 0), self._ordered.get((hi, lo), 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._edges)

    def __len__(self) -> int:
        return len(self._edges)


def orientation_matrix(
    n_nodes: int, orientation_counts: Mapping[tuple[int, int], tuple[int, int]]
) -> npt.NDArray[np.int64]:
    """The ``n x n`` matrix form of ``orientation_counts``: ``[a, b]`` = asked as (a, b).

    A caller that keeps this matrix up to date (one increment per success) can pass it
    as :attr:`PairingState.orientation_matrix` to skip converting the mapping on every
    wave, which matters for batches of hundreds of nodes.
    """
    m = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    for (lo, hi), (fwd, rev) in orientation_counts.items():
        m[lo, hi] += fwd
        m[hi, lo] += rev
    return m


def resampling_node_cap(wave_size: int, n_nodes: int) -> int:
    """Most appearances of one node in a resampling wave: ``max(1, ceil(2*wave/n))``.

    Args:
        wave_size: pairs in the wave (``min(COMPARISONS_PER_STABILITY_CHECK_ITERATION,
            budget left)``).
        n_nodes: nodes in the batch (> 0).

    Returns:
        The cap of spec §6: a wave of ``w`` pairs has ``2w`` node slots, spread evenly.
    """
    if n_nodes <= 0:
        raise ValueError(f"n_nodes must be positive, got {n_nodes}")
    return max(1, math.ceil(2 * max(wave_size, 0) / n_nodes))


def select_pairs(
    state: PairingState,
    mode: Mode,
    wave_size: int,
    rng: np.random.Generator,
    strategy: str = "balanced",
) -> list[PlannedPair]:
    """Choose and orient the pairs of the next wave (spec §6).

    Args:
        state: counts, scores, orientations, in-flight edges and the pass of the batch.
        mode: ``COVERAGE`` (new edges), ``RESAMPLING`` (only ``state.pass_remaining``)
            or ``AUDIT`` (uniformly random edges over all pairs).
        wave_size: most pairs to return (the caller applies the budget left).
        rng: the batch's seeded generator; the only source of randomness.
        strategy: one of :data:`STRATEGIES`; ignored by ``AUDIT``.

    Returns:
        At most ``wave_size`` ordered pairs, distinct edges, oriented by the fair
        complement rule. An empty list means the mode can produce no pair.

    Raises:
        ValueError: an unknown strategy or mode, arrays of the wrong length, or an edge
            naming a node outside the batch.
    """
    if strategy not in REGISTRY:
        raise ValueError(
            f"unknown matching strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    mode = Mode(mode)  # also accepts the stored string ("coverage", ...)
    n = state.n_nodes
    _check_state(state)
    if wave_size <= 0 or n < 2:
        return []
    if strategy in _GRAPH_STRATEGIES and mode is not Mode.AUDIT:
        problem = _graph_problem(state, mode, wave_size)
    elif n > COVARIANCE_MAX_N and (mode is Mode.AUDIT or strategy in _LARGE_NET_STRATEGIES):
        problem = _graph_problem(state, mode, wave_size, variances=strategy in ADAPTIVE)
    else:
        problem = _problem(state, mode, wave_size)
    if mode is Mode.AUDIT:
        edges = REGISTRY["random"](problem, wave_size, rng)
    else:
        edges = REGISTRY[strategy](problem, wave_size, rng)
    return orient(edges, state.a_counts, state.b_counts, state.orientation_counts, rng)


def orient(
    edges: Iterable[tuple[int, int]],
    a_counts: npt.ArrayLike,
    b_counts: npt.ArrayLike,
    orientation_counts: Mapping[tuple[int, int], tuple[int, int]],
    rng: np.random.Generator,
) -> list[PlannedPair]:
    """Orient edges in order with the fair complement rule (spec §6).

    Args:
        edges: unordered edges, in the order they were chosen.
        a_counts: per node, successful comparisons in position A before this wave.
        b_counts: the same for position B.
        orientation_counts: edge ``(lo, hi)`` -> (asked as ``(lo, hi)``, as ``(hi, lo)``).
        rng: draws the coin of a remaining tie.

    Returns:
        One :class:`PlannedPair` per edge; the A/B counts used for each pair include the
        pairs before it in the same call.
    """
    a = np.array(a_counts, dtype=np.int64, copy=True)
    b = np.array(b_counts, dtype=np.int64, copy=True)
    pairs: list[PlannedPair] = []
    for x, y in edges:
        lo, hi = (x, y) if x < y else (y, x)
        fwd, rev = orientation_counts.get((lo, hi), (0, 0))
        if fwd > rev:
            first = hi  # asked as (lo, hi) more often: the complement is next
        elif rev > fwd:
            first = lo
        else:
            d_lo = int(a[lo] - b[lo])
            d_hi = int(a[hi] - b[hi])
            # lo in A: d_lo + 1, d_hi - 1; hi in A: d_lo - 1, d_hi + 1
            k_lo = _imbalance_key(d_lo + 1, d_hi - 1)
            k_hi = _imbalance_key(d_lo - 1, d_hi + 1)
            if k_lo < k_hi:
                first = lo
            elif k_hi < k_lo:
                first = hi
            else:
                first = lo if rng.random() < 0.5 else hi
        second = hi if first == lo else lo
        a[first] += 1
        b[second] += 1
        pairs.append(PlannedPair(a=int(first), b=int(second)))
    return pairs


def _imbalance_key(d1: int, d2: int) -> tuple[int, int]:
    return (max(abs(d1), abs(d2)), abs(d1) + abs(d2))


def _check_state(state: PairingState) -> None:
    n = state.n_nodes
    if n < 0:
        raise ValueError(f"n_nodes must be >= 0, got {n}")
    for name in ("scores", "a_counts", "b_counts", "se", "grade_uncertainty", "node_weight"):
        arr = getattr(state, name)
        if arr is not None and np.shape(arr) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {np.shape(arr)}")
    om = state.orientation_matrix
    if om is not None and np.shape(om) != (n, n):
        raise ValueError(f"orientation_matrix must have shape ({n}, {n}), got {np.shape(om)}")


def _edge_array(edges: Iterable[tuple[int, int]], n: int, what: str) -> npt.NDArray[np.int64]:
    """Edges as a ``(m, 2)`` array of ``(lo, hi)``, checked to lie inside the batch."""
    flat = np.fromiter(chain.from_iterable(edges), dtype=np.int64)
    if flat.size == 0:
        return flat.reshape(0, 2)
    first, second = flat[0::2], flat[1::2]
    lo = np.minimum(first, second)
    hi = np.maximum(first, second)
    if lo.min() < 0 or hi.max() >= n or np.any(lo == hi):
        raise ValueError(f"{what} holds an edge outside the batch or a self-pair")
    return np.column_stack([lo, hi])


def _matrix(n: int, edges: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    m = np.zeros((n, n), dtype=np.bool_)
    if edges.size:
        m[edges[:, 0], edges[:, 1]] = True
        m[edges[:, 1], edges[:, 0]] = True
    return m


def _orientations(state: PairingState) -> npt.NDArray[np.int64]:
    """``[a, b]`` = successful comparisons asked as ``(a, b)``, as an ``n x n`` matrix."""
    n = state.n_nodes
    if state.orientation_matrix is not None:
        return np.asarray(state.orientation_matrix, dtype=np.int64)
    oc = state.orientation_counts
    keys = np.fromiter(chain.from_iterable(oc.keys()), dtype=np.int64, count=2 * len(oc))
    vals = np.fromiter(chain.from_iterable(oc.values()), dtype=np.int64, count=2 * len(oc))
    first, second = keys[0::2], keys[1::2]
    if keys.size and (
        min(first.min(), second.min()) < 0
        or max(first.max(), second.max()) >= n
        or np.any(first >= second)
    ):
        raise ValueError("orientation_counts holds an edge outside the batch or not as (lo, hi)")
    om = np.zeros((n, n), dtype=np.int64)
    om[first, second] = vals[0::2]
    om[second, first] = vals[1::2]
    return om


def _problem(state: PairingState, mode: Mode, wave_size: int) -> SelectionProblem:
    n = state.n_nodes
    in_flight = _matrix(n, _edge_array(state.in_flight, n, "in_flight"))
    node_counts = np.asarray(state.a_counts, dtype=np.float64) + np.asarray(
        state.b_counts, dtype=np.float64
    )
    edge_counts: npt.NDArray[np.int64] | None = None
    node_cap: int | None = None
    imbalance = np.asarray(state.a_counts, dtype=np.int64) - np.asarray(
        state.b_counts, dtype=np.int64
    )
    next_a: npt.NDArray[np.int8] | None = None
    comparisons: npt.NDArray[np.int64] | None = None
    if mode is Mode.COVERAGE:
        om = _orientations(state)
        comparisons = om + om.T
        candidates = comparisons == 0
    elif mode is Mode.RESAMPLING:
        remaining = _edge_array(state.pass_remaining, n, "pass_remaining")
        om = _orientations(state)
        edge_counts = comparisons = om + om.T
        # never a new edge: a pass edge must already have a successful comparison
        candidates = _matrix(n, remaining) & (edge_counts > 0)
        node_cap = resampling_node_cap(wave_size, n)
        # asked as (u, v) more often than (v, u): u goes to position B next
        next_a = np.sign(om.T - om).astype(np.int8)
    elif mode is Mode.AUDIT:
        candidates = np.ones((n, n), dtype=np.bool_)
    else:  # pragma: no cover - Mode is closed
        raise ValueError(f"unknown mode {mode!r}")
    candidates &= ~in_flight
    np.fill_diagonal(candidates, False)
    return SelectionProblem(
        n_nodes=n,
        candidates=candidates,
        node_counts=node_counts,
        scores=np.asarray(state.scores, dtype=np.float64),
        mode=mode,
        edge_counts=edge_counts,
        node_cap=node_cap,
        imbalance=imbalance,
        next_a=next_a,
        in_flight=in_flight,
        se=None if state.se is None else np.asarray(state.se, dtype=np.float64),
        grade_uncertainty=(
            None
            if state.grade_uncertainty is None
            else np.asarray(state.grade_uncertainty, dtype=np.float64)
        ),
        comparisons=comparisons,
        prior_precision=state.prior_precision,
        node_weight=_node_weight(state, mode),
    )


_GRAPH_STRATEGIES = frozenset({"balanced", "swiss"})
"""Strategies that work on a :class:`CandidateGraph` (no ``n x n`` matrix per wave)."""

ADAPTIVE = frozenset({"infogain", "grade_boundary"})
_LARGE_NET_STRATEGIES = ADAPTIVE | {"random"}
"""Strategies that work on a :class:`CandidateGraph` above ``COVARIANCE_MAX_N`` nodes
(:mod:`cj_runner.core.large_nets`); at or below it they keep the dense matrices."""


def _variances(state: PairingState, in_flight: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Score variances for the diagonal model, calls in flight counted as answered.

    ``state.se`` squared when given, else ``1 / (information_i + lambda)`` from the
    compared edges (:func:`cj_runner.core.strategies.laplace_variances` above
    ``COVARIANCE_MAX_N``); each edge in flight then adds its information ``p (1 - p)``.
    """
    n = state.n_nodes
    s = np.asarray(state.scores, dtype=np.float64)
    lam = max(float(state.prior_precision), _MIN_PRECISION)
    if state.se is not None:
        info = 1.0 / np.maximum(np.square(np.asarray(state.se, dtype=np.float64)), 1e-300)
    else:
        oc = state.orientation_counts
        keys = np.fromiter(chain.from_iterable(oc.keys()), dtype=np.int64, count=2 * len(oc))
        vals = np.fromiter(chain.from_iterable(oc.values()), dtype=np.int64, count=2 * len(oc))
        lo, hi = keys[0::2], keys[1::2]
        w = (vals[0::2] + vals[1::2]) * _pq(s[lo] - s[hi])
        info = np.asarray(
            np.bincount(lo, w, minlength=n) + np.bincount(hi, w, minlength=n) + lam,
            dtype=np.float64,
        )
    if in_flight.size:
        lo, hi = in_flight[:, 0], in_flight[:, 1]
        w = _pq(s[lo] - s[hi])
        info = info + np.bincount(lo, w, minlength=n) + np.bincount(hi, w, minlength=n)
    return np.asarray(1.0 / info, dtype=np.float64)


def _neighbours(state: PairingState) -> tuple[Sequence[Collection[int]], npt.NDArray[np.int64]]:
    if state.neighbours is not None:
        deg = state.degree
        if deg is None:
            deg = np.fromiter((len(x) for x in state.neighbours), dtype=np.int64)
        return state.neighbours, np.asarray(deg, dtype=np.int64)
    n = state.n_nodes
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for (lo, hi), (fwd, rev) in state.orientation_counts.items():
        if not (0 <= lo < hi < n):
            raise ValueError(
                "orientation_counts holds an edge outside the batch or not as (lo, hi)"
            )
        if fwd + rev > 0:
            nbrs[lo].add(hi)
            nbrs[hi].add(lo)
    return nbrs, np.fromiter((len(x) for x in nbrs), dtype=np.int64, count=n)


def _graph_problem(
    state: PairingState, mode: Mode, wave_size: int, *, variances: bool = False
) -> SelectionProblem:
    """The problem of :func:`_problem` without ``n x n`` work.

    Coverage: the complement of the compared and in-flight edges. Resampling: the pass
    edges still to ask, with their comparison counts (levels) and complement sides.
    Audit: the complement of the edges in flight. With ``variances`` the problem's
    ``se`` holds the square roots of :func:`_variances` (calls in flight counted).
    """
    n = state.n_nodes
    in_flight = _edge_array(state.in_flight, n, "in_flight")
    a_counts = np.asarray(state.a_counts, dtype=np.int64)
    b_counts = np.asarray(state.b_counts, dtype=np.int64)
    node_cap: int | None = None
    if mode is Mode.COVERAGE:
        nbrs, degree = _neighbours(state)
        graph = CandidateGraph.complement_of(
            n, nbrs, degree, [(int(a), int(b)) for a, b in in_flight.tolist()]
        )
    elif mode is Mode.RESAMPLING:
        remaining = _edge_array(state.pass_remaining, n, "pass_remaining")
        flying = {(int(a), int(b)) for a, b in in_flight.tolist()}
        oc = state.orientation_counts
        edges: list[tuple[int, int]] = []
        counts: list[int] = []
        sides: dict[tuple[int, int], int] = {}
        for lo, hi in remaining.tolist():
            if (lo, hi) in flying:
                continue
            fwd, rev = oc.get((lo, hi), (0, 0))
            if fwd + rev <= 0:
                continue  # never a new edge
            edges.append((lo, hi))
            counts.append(fwd + rev)
            if fwd != rev:
                s = 1 if rev > fwd else -1  # asked as (lo, hi) more often: lo goes to B
                sides[(lo, hi)] = s
                sides[(hi, lo)] = -s
        edge_arr = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        order = np.lexsort((edge_arr[:, 1], edge_arr[:, 0]))
        graph = CandidateGraph(
            n,
            edges=edge_arr[order],
            edge_counts=np.asarray(counts, dtype=np.int64)[order],
            sides=sides,
        )
        node_cap = resampling_node_cap(wave_size, n)
    elif mode is Mode.AUDIT:
        graph = CandidateGraph.complement_of(
            n,
            [()] * n,
            np.zeros(n, dtype=np.int64),
            [(int(a), int(b)) for a, b in in_flight.tolist()],
        )
    else:  # pragma: no cover - Mode is closed
        raise ValueError(f"unknown mode {mode!r}")
    se = state.se
    if variances:
        se = np.sqrt(_variances(state, in_flight))
    return SelectionProblem(
        n_nodes=n,
        candidates=None,
        node_counts=(a_counts + b_counts).astype(np.float64),
        scores=np.asarray(state.scores, dtype=np.float64),
        mode=mode,
        node_cap=node_cap,
        imbalance=a_counts - b_counts,
        se=None if se is None else np.asarray(se, dtype=np.float64),
        grade_uncertainty=(
            None
            if state.grade_uncertainty is None
            else np.asarray(state.grade_uncertainty, dtype=np.float64)
        ),
        prior_precision=state.prior_precision,
        graph=graph,
        node_weight=_node_weight(state, mode),
    )


def _node_weight(state: PairingState, mode: Mode) -> npt.NDArray[np.float64] | None:
    """The selection weights of ``state`` (``None`` for audit pairs: uniformly random)."""
    if state.node_weight is None or mode is Mode.AUDIT:
        return None
    weight = np.asarray(state.node_weight, dtype=np.float64)
    if not np.all(np.isfinite(weight)) or np.any(weight <= 0):
        raise ValueError("node_weight must be finite and positive")
    return weight
