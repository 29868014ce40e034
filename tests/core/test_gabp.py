"""Gaussian belief propagation on a Laplacian: variances and the Bethe log determinant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cj_runner.core.gabp import laplacian_bp

PROPS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def dense(n: int, lo: np.ndarray, hi: np.ndarray, weight: np.ndarray, lam: float) -> np.ndarray:
    mat = np.zeros((n, n))
    np.add.at(mat, (lo, hi), -weight)
    np.add.at(mat, (hi, lo), -weight)
    mat[np.diag_indices(n)] = -mat.sum(axis=1) + lam
    return mat


def random_tree(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    child = np.arange(1, n)
    parent = np.array([gen.integers(0, i) for i in range(1, n)], dtype=np.int64)
    weight = gen.uniform(0.01, 3.0, n - 1)
    return np.minimum(child, parent), np.maximum(child, parent), weight


@PROPS
@given(
    n=st.integers(2, 80),
    seed=st.integers(0, 2**32 - 1),
    lam=st.floats(1e-3, 100.0),
    forest=st.booleans(),
)
def test_exact_on_trees_and_forests(n: int, seed: int, lam: float, forest: bool) -> None:
    lo, hi, weight = random_tree(n, seed)
    if forest:  # drop every third edge: several trees
        keep = np.arange(lo.size) % 3 != 0
        lo, hi, weight = lo[keep], hi[keep], weight[keep]
    bp = laplacian_bp(n, lo, hi, weight, lam)
    mat = dense(n, lo, hi, weight, lam)
    sign, log_det = np.linalg.slogdet(mat)
    assert sign > 0
    assert bp.log_det == pytest.approx(log_det, rel=1e-9, abs=1e-7)
    inverse = np.linalg.inv(mat)
    np.testing.assert_allclose(bp.variances, np.diag(inverse), rtol=1e-6)
    difference = inverse[lo, lo] + inverse[hi, hi] - 2 * inverse[lo, hi]
    np.testing.assert_allclose(bp.difference_variances, difference, rtol=1e-6)


@PROPS
@given(
    n=st.integers(50, 400),
    cpe=st.floats(3.0, 20.0),
    seed=st.integers(0, 2**32 - 1),
    tau=st.floats(0.3, 3.0),
)
@example(n=50, cpe=14.0, seed=0, tau=3.0)
@example(n=50, cpe=20.0, seed=3, tau=3.0)
def test_bethe_log_det_is_close_on_random_comparison_graphs(
    n: int, cpe: float, seed: int, tau: float
) -> None:
    """Loopy graphs: within 0.04 nats per node of the dense value (worst found 0.033, at
    n = 50, 20 cpe, tau = 3: 40% of all pairs compared; 0.017 was the worst of the first
    examples, and the whole suite once drew 0.026 at n = 50, 14 cpe), and closer than the
    diagonal bound ``-sum log Sigma_ii`` (Hadamard) that the large-batch evidence used
    before."""
    gen = np.random.default_rng(seed)
    m = int(n * cpe / 2)
    a = gen.integers(0, n, m)
    b = (a + gen.integers(1, n, m)) % n
    edges, count = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_counts=True)
    lo, hi = np.divmod(edges, n)
    theta = gen.normal(0, tau, n)
    p = 1 / (1 + np.exp(-(theta[lo] - theta[hi])))
    weight = count * p * (1 - p)
    lam = 1 / tau**2
    bp = laplacian_bp(n, lo, hi, weight, lam)
    mat = dense(n, lo, hi, weight, lam)
    _, log_det = np.linalg.slogdet(mat)
    assert abs(bp.log_det - log_det) <= 0.04 * n
    hadamard = -float(np.sum(np.log(np.diag(np.linalg.inv(mat)))))
    assert hadamard <= log_det + 1e-9
    assert abs(bp.log_det - log_det) < log_det - hadamard


def test_rejects_a_non_positive_ridge() -> None:
    with pytest.raises(ValueError, match="lam"):
        laplacian_bp(2, np.array([0]), np.array([1]), np.array([1.0]), 0.0)
