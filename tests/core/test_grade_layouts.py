"""Grade confidence in the exact Gaussian world of ``benchmarks/bench_grade_layouts.py``:
with anchors drawn as the model assumes (like the students, graded by their true order),
rule 3a's stated confidence matches the observed accuracy, which simulation truth
decides (docs/statistics.md, "Anchor draws in grade order")."""

from __future__ import annotations

import numpy as np

from benchmarks import bench_grade_layouts as bench


def _claims(seed: int, grade_order: bool) -> tuple[np.ndarray, np.ndarray]:
    claims = [
        claim
        for r in range(80)
        for claim in bench.replicate("prior", bench.SE[8], seed + r, grade_order)
    ]
    return np.array([c for c, _ in claims]), np.array([k for _, k in claims], dtype=float)


def test_anchors_drawn_like_the_students_give_calibrated_confidence() -> None:
    stated, right = _claims(7_000, True)
    # 4,800 claims, clustered by replicate: Monte Carlo SE about 0.7 points
    assert abs(float(right.mean() - stated.mean())) < 0.015
    # claims between 0.5 and 0.7 (mostly the middle grades, where reversed anchor draws
    # used to inflate them) keep their stated accuracy too
    middle = (stated >= 0.5) & (stated < 0.7)
    assert middle.sum() > 500
    assert abs(float(right[middle].mean() - stated[middle].mean())) < 0.03
