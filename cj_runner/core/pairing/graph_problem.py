"""Step 1 of pair selection without ``n x n`` work: the candidates of a mode as a
:class:`~cj_runner.core.candidates.CandidateGraph` (``balanced`` and ``swiss`` always,
every strategy above ``COVARIANCE_MAX_N`` nodes), with the diagonal score variances of
the adaptive strategies there."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import chain

import numpy as np
import numpy.typing as npt

from cj_runner.core.candidates import CandidateGraph
from cj_runner.core.models import Mode
from cj_runner.core.pairing.problem import _edge_array, _node_weight, resampling_node_cap
from cj_runner.core.pairing.state import PairingState
from cj_runner.core.strategies import SelectionProblem
from cj_runner.core.strategies.adaptive import _MIN_PRECISION, _pq


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
