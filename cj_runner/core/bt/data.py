"""The comparisons of a Bradley-Terry fit, checked and aggregated, and the cache that
prepares the same read-only arrays once.

:func:`_prepare` validates the comparisons and aggregates them by ordered pair and by
unordered edge; :func:`_structure` lays the edges out as a CSR adjacency for the
conjugate-gradient solver. :func:`_prepared` is the one cache of both (an identity cache
of the last read-only arrays), shared by every fit in the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

DEFAULT_PRIOR_PRECISION: float = 0.01
"""Default ridge: a N(0, 10^2) prior on every score (and on the order effect).

Essay qualities in comparative-judgement studies spread over a few logits (score standard
deviations of 1-3 logits are typical), so a prior standard deviation of 10 logits is far
wider than any plausible scale: it moves a well-measured score by well under 1% of its
standard error, yet keeps a node that won (or lost) every comparison finite, a few logits
beyond its opponents, and places the components of a disconnected comparison graph at a
common mean of 0 with very wide standard errors instead of failing.
"""

_DENSE_SOLVE_MAX_N = 300  # Newton steps use a dense Cholesky up to here, sparse CG above.


def _iterative(n: int) -> bool:
    """Are the Newton steps of ``n`` nodes solved by conjugate gradients (above
    :data:`_DENSE_SOLVE_MAX_N`)? The one place the threshold is read, so the data, the
    solver and the Newton loop always agree (and a test can move it in one place)."""
    return n > _DENSE_SOLVE_MAX_N


@dataclass(frozen=True)
class _Data:
    """Comparisons aggregated by ordered pair, plus the unordered-edge structure."""

    n: int
    a: IntArray  # node in position A, one entry per distinct ordered pair
    b: IntArray  # node in position B
    wins: FloatArray  # weighted wins of position A
    total: FloatArray  # total weight
    edge_of_pair: IntArray  # index into (lo, hi) of each ordered pair's unordered edge
    lo: IntArray
    hi: IntArray


def _sum_by(index: IntArray, values: FloatArray, size: int) -> FloatArray:
    """``out[k] = sum(values[index == k])`` for ``k < size`` (a vectorised scatter-add)."""
    return np.bincount(index, weights=values, minlength=size).astype(np.float64, copy=False)


def _as_index_array(values: ArrayLike, name: str, n_items: int) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer node indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_items:
        raise ValueError(f"{name} holds a node index outside 0..{n_items - 1}")
    return arr.astype(np.intp, copy=False)


def _prepare(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    weights: ArrayLike | None,
) -> _Data:
    """Validate the comparisons and aggregate them by ordered pair."""
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    n = int(n_items)
    a = _as_index_array(first, "first", n)
    b = _as_index_array(second, "second", n)
    y = np.asarray(first_won, dtype=np.float64)
    m = a.size
    if b.size != m or y.shape != (m,):
        raise ValueError("first, second and first_won must have the same length")
    if np.any(a == b):
        raise ValueError("a comparison of a node with itself (first == second)")
    if not np.all((y >= 0.0) & (y <= 1.0)):
        raise ValueError("first_won must be true/false (or a share between 0 and 1)")
    if weights is None:
        w = np.ones(m)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (m,):
            raise ValueError("weights must have one entry per comparison")
        if not np.all(np.isfinite(w) & (w >= 0.0)):
            raise ValueError("weights must be finite and non-negative")
    keep = w > 0
    a, b, y, w = a[keep], b[keep], y[keep], w[keep]

    pair_key, pair_index = np.unique(a * n + b, return_inverse=True)
    pa, pb = np.divmod(pair_key, n)
    wins = _sum_by(pair_index, w * y, pair_key.size)
    total = _sum_by(pair_index, w, pair_key.size)
    lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
    edge_key, edge_of_pair = np.unique(lo * n + hi, return_inverse=True)
    elo, ehi = np.divmod(edge_key, n)
    return _Data(
        n=n,
        a=pa.astype(np.intp),
        b=pb.astype(np.intp),
        wins=wins,
        total=total,
        edge_of_pair=edge_of_pair.astype(np.intp),
        lo=elo.astype(np.intp),
        hi=ehi.astype(np.intp),
    )


@dataclass(frozen=True)
class _Structure:
    """CSR layout of the symmetric adjacency of the unordered edges (fixed per fit)."""

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    src: IntArray  # edge index of each stored entry


def _structure(data: _Data) -> _Structure:
    n_edges = data.lo.size
    rows = np.concatenate([data.lo, data.hi])
    cols = np.concatenate([data.hi, data.lo])
    # The edges are distinct, so a COO -> CSR conversion (a counting sort in C) carrying the
    # edge index as its value yields the CSR layout and each entry's edge at once.
    layout = scipy.sparse.coo_array(
        (np.concatenate([np.arange(n_edges), np.arange(n_edges)]).astype(np.float64), (rows, cols)),
        shape=(data.n, data.n),
    ).tocsr()
    return _Structure(
        indptr=layout.indptr.astype(np.int64),
        indices=layout.indices.astype(np.int64),
        src=layout.data.astype(np.intp),
    )


_last_prepared: tuple[int, tuple[Any, ...], _Data, _Structure] | None = None


def _frozen(values: ArrayLike) -> bool:
    """An array no one can change behind our back: read-only and owning its data."""
    return isinstance(values, np.ndarray) and not values.flags.writeable and values.flags.owndata


def _prepared(
    n_items: int,
    first: ArrayLike,
    second: ArrayLike,
    first_won: ArrayLike,
    weights: ArrayLike | None,
) -> tuple[_Data, _Structure]:
    """:func:`_prepare` and the sparse layout, reused for the very same read-only arrays.

    A batch's per-wave refit and its pair selection fit the same comparisons with
    different priors; :meth:`cj_runner.core.workflow.WorkflowState.comparison_arrays`
    hands both the same read-only arrays, so they are validated and aggregated once.
    """
    global _last_prepared
    arrays = (first, second, first_won)
    reuse = weights is None and all(_frozen(x) for x in arrays)
    last = _last_prepared
    if (
        reuse
        and last is not None
        and last[0] == n_items
        and all(x is y for x, y in zip(last[1], arrays, strict=True))
    ):
        return last[2], last[3]
    data = _prepare(n_items, first, second, first_won, weights)
    structure = (
        _structure(data)
        if _iterative(data.n)
        else _Structure(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.intp))
    )
    if reuse:
        _last_prepared = (n_items, arrays, data, structure)
    return data, structure
