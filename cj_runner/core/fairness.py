"""Positional fairness of a batch (spec §9): A/B counts, skew, missing complements,
order flips and the judge's position bias.

Definitions:

* **skew** of a node: ``|A - B| / (A + B)``; ``nan`` for a node with no successful
  comparison (it has no position history). ``max_skew`` and ``mean_skew`` ignore the
  ``nan`` nodes (and are 0.0 when no node has a comparison).
* **never_in_a** / **never_in_b**: nodes with ``A == 0`` / ``B == 0``; a node with no
  comparison at all is in both lists.
* **missing_complement**: edges compared two or more times, all in one orientation.
* **flip rate**: over the edges asked in both orientations (``flip_edges`` of them), the
  mean of ``p(1 - q) + (1 - p)q``, where ``p`` is the share of the ``(lo, hi)``
  comparisons won by node ``lo`` and ``q`` the share of the ``(hi, lo)`` comparisons won
  by ``lo``: the chance that one comparison from each orientation, drawn at random, names
  different winners. For an edge asked once each way it is 1 if the winner changed with
  the order and 0 otherwise; an edge asked more often counts once, with that probability.
  ``None`` when no edge was asked both ways.
* **position bias**: the share of comparisons won by position A, with a 95% Wilson score
  interval (Wilson 1927).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cj_runner.core.models import Mode, Outcome
from cj_runner.core.reliability import wilson_interval

__all__ = ["FairnessMetrics", "fairness_metrics", "nodes_above", "skew"]


def _interval(successes: int, trials: int) -> tuple[float, float]:
    share = wilson_interval(successes, trials)
    return (share.low, share.high)


def skew(a_counts: npt.ArrayLike, b_counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Positional skew ``|A - B| / (A + B)`` per node; ``nan`` where ``A + B == 0``."""
    a = np.asarray(a_counts, dtype=np.float64)
    b = np.asarray(b_counts, dtype=np.float64)
    total = a + b
    out = np.full(total.shape, np.nan)
    np.divide(np.abs(a - b), total, out=out, where=total > 0)
    return out


def nodes_above(skews: npt.ArrayLike, threshold: float) -> list[int]:
    """Nodes whose skew is strictly above ``threshold`` (``nan`` never is)."""
    s = np.asarray(skews, dtype=np.float64)
    return [int(i) for i in np.flatnonzero(np.nan_to_num(s, nan=-np.inf) > threshold)]


@dataclass(frozen=True)
class FairnessMetrics:
    """Fairness of a batch; see the module docstring for the definitions."""

    a_counts: npt.NDArray[np.int64]
    b_counts: npt.NDArray[np.int64]
    skew: npt.NDArray[np.float64]
    max_skew: float
    mean_skew: float
    never_in_a: list[int]
    never_in_b: list[int]
    missing_complement: list[tuple[int, int]]
    flip_rate: float | None
    flip_edges: int
    comparisons: int = 0
    position_a_wins: int = 0
    position_a_share: float | None = None
    position_a_ci95: tuple[float, float] | None = None


def fairness_metrics(
    n_nodes: int, outcomes: Sequence[Outcome], mode: Mode | None = None
) -> FairnessMetrics:
    """Fairness metrics from the successful comparisons of a batch.

    Args:
        n_nodes: nodes in the batch.
        outcomes: successful comparisons (ordered pair and winner).
        mode: when given, only the comparisons made in this mode count.

    Returns:
        The metrics of the module docstring.

    Raises:
        ValueError: a comparison names a node outside the batch or is a self-pair.
    """
    rows = [o for o in outcomes if mode is None or o.mode == mode]
    a_counts = np.zeros(n_nodes, dtype=np.int64)
    b_counts = np.zeros(n_nodes, dtype=np.int64)
    # edge -> [asked (lo, hi), asked (hi, lo), lo won as (lo, hi), lo won as (hi, lo)]
    per_edge: dict[tuple[int, int], list[int]] = {}
    a_wins = 0
    for o in rows:
        if not (0 <= o.a < n_nodes and 0 <= o.b < n_nodes) or o.a == o.b:
            raise ValueError(f"comparison ({o.a}, {o.b}) is outside the batch or a self-pair")
        a_counts[o.a] += 1
        b_counts[o.b] += 1
        a_wins += o.winner == "A"
        forward = o.a < o.b
        key = (o.a, o.b) if forward else (o.b, o.a)
        cell = per_edge.setdefault(key, [0, 0, 0, 0])
        lo_won = (o.winner == "A") == forward
        cell[0 if forward else 1] += 1
        cell[2 if forward else 3] += lo_won
    s = skew(a_counts, b_counts)
    seen = ~np.isnan(s)
    missing = sorted(e for e, c in per_edge.items() if c[0] + c[1] >= 2 and min(c[0], c[1]) == 0)
    flips = [
        p * (1 - q) + (1 - p) * q
        for c in per_edge.values()
        if c[0] > 0 and c[1] > 0
        for p, q in [(c[2] / c[0], c[3] / c[1])]
    ]
    n = len(rows)
    return FairnessMetrics(
        a_counts=a_counts,
        b_counts=b_counts,
        skew=s,
        max_skew=float(s[seen].max()) if seen.any() else 0.0,
        mean_skew=float(s[seen].mean()) if seen.any() else 0.0,
        never_in_a=[int(i) for i in np.flatnonzero(a_counts == 0)],
        never_in_b=[int(i) for i in np.flatnonzero(b_counts == 0)],
        missing_complement=missing,
        flip_rate=float(np.mean(flips)) if flips else None,
        flip_edges=len(flips),
        comparisons=n,
        position_a_wins=a_wins,
        position_a_share=a_wins / n if n else None,
        position_a_ci95=_interval(a_wins, n) if n else None,
    )
