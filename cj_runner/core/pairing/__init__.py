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

The package: :mod:`~cj_runner.core.pairing.state` (:class:`PairingState`, the orientation
counts), :mod:`~cj_runner.core.pairing.problem` and
:mod:`~cj_runner.core.pairing.graph_problem` (step 1, with ``n x n`` matrices or on a
candidate graph), :mod:`~cj_runner.core.pairing.orientation` (step 3); :func:`select_pairs`
here puts them together with the strategy of step 2.
"""

from __future__ import annotations

import numpy as np

from cj_runner.core.models import Mode, PlannedPair
from cj_runner.core.pairing.graph_problem import _graph_problem as _graph_problem
from cj_runner.core.pairing.orientation import orient
from cj_runner.core.pairing.problem import _check_state, resampling_node_cap
from cj_runner.core.pairing.problem import _problem as _problem
from cj_runner.core.pairing.state import OrientationCounts, PairingState, orientation_matrix
from cj_runner.core.strategies import COVARIANCE_MAX_N, REGISTRY

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


_GRAPH_STRATEGIES = frozenset({"balanced", "swiss"})
"""Strategies that work on a :class:`CandidateGraph` (no ``n x n`` matrix per wave)."""


ADAPTIVE = frozenset({"infogain", "grade_boundary"})


_LARGE_NET_STRATEGIES = ADAPTIVE | {"random"}
"""Strategies that work on a :class:`CandidateGraph` above ``COVARIANCE_MAX_N`` nodes
(:mod:`cj_runner.core.large_nets`); at or below it they keep the dense matrices."""
