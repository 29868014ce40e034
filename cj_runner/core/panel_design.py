"""Who judges what in a panel batch: the seeded, deterministic spread of calls over judges.

Pure functions of the call number, the judges' shares and the batch seed, so the same
batch asks the same judge the same pair whatever the timing of the answers (spec §5a).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["panel_member"]


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
