"""Who judges what in a panel batch: the seeded, deterministic spread of calls over judges.

Pure functions of the pair, the judges' shares and the batch seed (:func:`panel_member`),
or of the wave's own generator (the pairs asked of two judges on purpose:
:func:`double_count`, :func:`assign_doubles`), so the same batch asks the same judge the
same pair whatever the timing of the answers (spec §5a).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["assign_doubles", "double_count", "judge_pair_order", "judge_pairs", "panel_member"]


def panel_member(
    shares: ArrayLike, seed: int, checksum_a: str, checksum_b: str, repeat_index: int
) -> int:
    """Which judge of a panel answers one ordered pair (how a panel batch spreads calls).

    A uniform number from the SHA-256 of ``(seed, checksum A, checksum B, repeat index)``
    picks a judge with probability equal to its share: every judge sees a random, hence
    representative, sample of the batch's pairs, modes and waves; a retried call goes to
    the same judge; and the choice does not depend on call order, timing or concurrency
    (spec §5a), so a resumed batch and the reports can recompute it.

    Args:
        shares: non-negative share per judge (normalised; at least one positive).
        seed: the panel's seed.
        checksum_a: SHA-256 of the essay in position A.
        checksum_b: SHA-256 of the essay in position B.
        repeat_index: earlier asks of this ordered pair in the batch.

    Returns:
        The judge's index.
    """
    s = np.asarray(shares, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(np.isfinite(s) & (s >= 0)) or s.sum() <= 0:
        raise ValueError("shares must be finite, non-negative and not all zero")
    key = f"{seed}\x1f{checksum_a}\x1f{checksum_b}\x1f{repeat_index}".encode()
    u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
    edges = np.cumsum(s / s.sum())
    index = int(np.searchsorted(edges, u, side="right"))
    return min(index, s.size - 1)


def judge_pairs(n_judges: int) -> list[tuple[int, int]]:
    """Every pair of judges ``(i, j)``, ``i < j``, in a fixed order."""
    return [(i, j) for i in range(n_judges) for j in range(i + 1, n_judges)]


def double_count(size: int, share: float, rng: np.random.Generator) -> int:
    """How many of a wave's ``size`` comparisons are second asks (a pair asked of a second
    judge), so that ``share`` of the wave's pairs are asked twice on average.

    With ``p`` pairs and ``d`` second asks, ``p + d = size`` and ``d = share * p``: the
    expected ``d`` is ``size * share / (1 + share)``, rounded up or down by one draw of
    ``rng`` (the fraction is the chance of rounding up), and never more than ``size // 2``.

    Args:
        size: the comparisons the wave may hold (pairs and second asks).
        share: the share of pairs asked of two judges, in [0, 1].
        rng: the wave's generator for second asks.

    Returns:
        The number of second asks.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError("share must be in [0, 1]")
    if size < 2 or share == 0.0:
        return 0
    expected = size * share / (1.0 + share)
    whole = math.floor(expected)
    n = whole + int(rng.random() < expected - whole)
    return min(n, size // 2)


def judge_pair_order(n_judges: int, seed: int) -> list[tuple[int, int]]:
    """The order in which a batch's doubled pairs go round the pairs of judges: every pair
    of judges once, in a seeded random order."""
    pairs = judge_pairs(n_judges)
    order = np.random.default_rng([seed, 0xD0B1E]).permutation(len(pairs))
    return [pairs[int(k)] for k in order]


def assign_doubles(
    n_pairs: int,
    n_doubles: int,
    order: list[tuple[int, int]],
    start: int,
    rng: np.random.Generator,
) -> list[tuple[int, int, int]]:
    """Which of a wave's pairs are asked of two judges, and of which two.

    The doubled pairs are a uniform random subset of the wave's ``n_pairs``. The judge
    pairs go round ``order`` (every pair of judges, :func:`judge_pair_order`) in turn,
    the batch's ``start``-th doubled pair taking ``order[start % len(order)]``, so every
    two judges share the same number of deliberately doubled pairs (to one) whatever
    their shares (the shares spread the other calls); a coin decides which of the two
    answers the pair as planned (the other answers its complement).

    Args:
        n_pairs: pairs in the wave (candidates for doubling, in order).
        n_doubles: how many of them to double (at most ``n_pairs``).
        order: the pairs of judges in the batch's round (at least one).
        start: doubled pairs planned earlier in the batch.
        rng: the wave's generator for second asks.

    Returns:
        ``(pair index, judge of the pair, judge of the second ask)`` per doubled pair,
        by pair index.
    """
    if not order:
        raise ValueError("doubled pairs need at least two judges")
    n_doubles = min(n_doubles, n_pairs)
    if n_doubles <= 0:
        return []
    chosen = np.sort(rng.choice(n_pairs, size=n_doubles, replace=False))
    out = []
    for k, index in enumerate(chosen):
        first, second = order[(start + k) % len(order)]
        if rng.random() < 0.5:
            first, second = second, first
        out.append((int(index), first, second))
    return out
