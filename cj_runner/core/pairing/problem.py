"""Step 1 of pair selection: the candidates of a mode as a
:class:`~cj_runner.core.strategies.SelectionProblem` with ``n x n`` matrices
(:func:`_problem`), the checks and helpers it shares with the graph form
(:mod:`cj_runner.core.pairing.graph_problem`), and the resampling cap per node."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import chain

import numpy as np
import numpy.typing as npt

from cj_runner.core.models import Mode
from cj_runner.core.pairing.state import PairingState
from cj_runner.core.strategies import SelectionProblem


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


def _node_weight(state: PairingState, mode: Mode) -> npt.NDArray[np.float64] | None:
    """The selection weights of ``state`` (``None`` for audit pairs: uniformly random)."""
    if state.node_weight is None or mode is Mode.AUDIT:
        return None
    weight = np.asarray(state.node_weight, dtype=np.float64)
    if not np.all(np.isfinite(weight)) or np.any(weight <= 0):
        raise ValueError("node_weight must be finite and positive")
    return weight
