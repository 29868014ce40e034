"""Step 3 of pair selection: the fair complement orientation of the chosen edges
(spec §6; the rule in :mod:`cj_runner.core.pairing`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from cj_runner.core.models import PlannedPair


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
