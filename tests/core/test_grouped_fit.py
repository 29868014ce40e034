"""One computation of infit/outfit, their model SDs and ZSTDs for every grouping:
:func:`cj_runner.core.reliability.grouped_fit`, used by node (``standardized_fit``) and by
judge (``judge_fit``), against a direct per-group computation written from the formulas
(Wright & Masters 1982, ch. 5; Wilson-Hilferty ZSTD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_runner.core.panel.fit import PanelComparisons
from cj_runner.core.panel.misfit import judge_fit
from cj_runner.core.reliability import standardized_fit


def _direct(members: list[list[int]], y: np.ndarray, p: np.ndarray) -> list[tuple[float, ...]]:
    """Per group, from its comparisons' outcomes and probabilities: (infit, outfit,
    infit ZSTD, outfit ZSTD, count), one loop per group, no shared code."""
    rows = []
    for ks in members:
        if not ks:
            rows.append((math.nan, math.nan, math.nan, math.nan, 0))
            continue
        w = [p[k] * (1 - p[k]) for k in ks]
        sq = [(y[k] - p[k]) ** 2 for k in ks]
        n = len(ks)
        infit = sum(sq) / sum(w)
        outfit = sum(s / v for s, v in zip(sq, w, strict=True)) / n
        q_in = math.sqrt(max(sum(v - 4 * v * v for v in w), 0.0)) / sum(w)
        q_out = math.sqrt(max(sum(1 / v for v in w) - 4 * n, 0.0)) / n

        def zstd(ms: float, q: float) -> float:
            return 0.0 if q <= 1e-9 else (ms ** (1 / 3) - 1) * 3 / q + q / 3

        rows.append((infit, outfit, zstd(infit, q_in), zstd(outfit, q_out), n))
    return rows


def _compare(stats: object, rows: list[tuple[float, ...]]) -> None:
    names = ("infit", "outfit", "infit_z", "outfit_z", "count")
    for column, name in enumerate(names):
        got = np.asarray(getattr(stats, name), dtype=float)
        want = np.array([row[column] for row in rows], dtype=float)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9, nan_ok=True), name


designs = st.integers(2, 12).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.tuples(
                st.integers(0, n - 1), st.integers(1, n - 1), st.booleans(), st.integers(0, 3)
            ),
            max_size=40,
        ),
        st.lists(st.floats(-4, 4), min_size=n, max_size=n),
        st.floats(-1, 1),
    )
)


@settings(max_examples=80, deadline=None)
@given(design=designs)
def test_node_and_judge_groupings_equal_a_direct_computation(
    design: tuple[int, list[tuple[int, int, bool, int]], list[float], float],
) -> None:
    n, rows, scores, eta = design
    first = np.array([a for a, _, _, _ in rows], dtype=np.int64)
    second = np.array([(a + step) % n for a, step, _, _ in rows], dtype=np.int64)
    won = np.array([w for _, _, w, _ in rows], dtype=float)
    judge = np.array([j for _, _, _, j in rows], dtype=np.int64)
    theta = np.asarray(scores)
    p = scipy.special.expit(theta[first] - theta[second] + eta)

    # by node: a comparison counts for both its nodes
    by_node = [[k for k in range(first.size) if i in (first[k], second[k])] for i in range(n)]
    _compare(standardized_fit(n, first, second, won, theta, eta), _direct(by_node, won, p))

    # by judge, with the same probabilities (judge 3 may have none: nan, count 0)
    data = PanelComparisons.of(n, 4, judge, first, second, won)
    by_judge = [[k for k in range(first.size) if judge[k] == j] for j in range(4)]
    _compare(judge_fit(data, probabilities=p), _direct(by_judge, won, p))
