"""Grade confidence in an exact Gaussian world: calibrated on average over where anchors
sit, not for a fixed placement of them.

No Bradley-Terry fit and no judge: every essay's true quality is drawn from
``N(0, sd^2)`` (sd = 1.64, the calibration benchmark's), its measurement is the quality
plus ``N(0, se^2)`` noise (se as an essay's posterior SD at 8, 12 and 20 comparisons
per essay), and the posterior of every essay is exact: ``N(w x, w se^2)`` with
``w = sd^2 / (sd^2 + se^2)``. Four anchors, one per grade; the true grade of a student is
the grade of its true quality on the anchors' true calibration (the midpoints between
adjacent anchors), as in ``bench_calibration.py``. The product's rule 3a
(:func:`cj_runner.core.projection.joint_grade_probabilities`: anchor draws in grade order,
or ``--unrestricted`` for the rule before) turns these posteriors into grade
probabilities. Per placement of the anchors it prints the largest gap between the stated
confidence and the observed accuracy over the confidence bins (>= 50 students;
observed minus stated, points, ± Monte Carlo SE with replicates as clusters).

Placements: ``prior`` draws the anchors like the students each replicate and grades them
by their true order, the model rule 3a's posterior belongs to, so there every bin must be
calibrated up to Monte Carlo error; ``fixed`` (the 20/40/60/80 percentiles), ``spread``
(10/35/65/90) and ``narrow`` (30/45/55/70) keep the anchors at the same places in every
replicate, which no prior over where anchors sit describes, so no posterior is bound to
be calibrated there (and each errs its own way). Run: ``python
benchmarks/bench_grade_layouts.py`` (about three minutes of one core; ``--unrestricted`` the same).
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_calibration as bc

from cj_runner.core.projection import calibrate, joint_grade_probabilities

SD = 1.64
SE = {8: 0.98, 12: 0.80, 20: 0.62}  # posterior SDs' scale at 8, 12, 20 cpe (before shrinkage)
LAYOUTS = {
    "prior": None,
    "fixed": (0.2, 0.4, 0.6, 0.8),
    "spread": (0.10, 0.35, 0.65, 0.90),
    "narrow": (0.30, 0.45, 0.55, 0.70),
}
STUDENTS = 60


def replicate(layout: str, se: float, seed: int, grade_order: bool) -> list[tuple[float, bool]]:
    """One replicate: every student's stated confidence and whether its grade is right."""
    rng = np.random.default_rng(seed)
    percentiles = LAYOUTS[layout]
    if percentiles is None:
        anchors = np.sort(rng.normal(0.0, SD, 4))
    else:
        anchors = np.asarray(stats.norm.ppf(percentiles)) * SD
    truth = np.concatenate([rng.normal(0.0, SD, STUDENTS), anchors])
    w = SD**2 / (SD**2 + se**2)
    mean = w * (truth + rng.normal(0.0, se, truth.size))
    variances = np.full(truth.size, w * se**2)
    anchor_nodes = list(range(STUDENTS, STUDENTS + 4))
    probs = joint_grade_probabilities(
        mean,
        variances,
        anchor_nodes,
        np.arange(4.0),
        list(range(STUDENTS)),
        4,
        np.ones(4),
        rng,
        grade_order=grade_order,
    )
    assert probs is not None
    true_cal = calibrate(anchors, np.arange(4.0), 4)
    assert true_cal is not None
    true_grade = np.searchsorted(true_cal[1], truth[:STUDENTS])
    best = probs.argmax(axis=1)
    return [
        (float(p[b]), int(b) == int(t)) for p, b, t in zip(probs, best, true_grade, strict=True)
    ]


def largest_gap(clusters: list[list[tuple[float, bool]]]) -> str:
    rows = bc.calibration_bins(clusters)
    worst = max(rows, key=lambda r: abs(r[4] - r[3]))
    beyond = sum(abs(r[4] - r[3]) > 0.05 for r in rows)
    lo, hi, _count, stated, observed, se = worst
    gap = f"{100 * (observed - stated):+.1f} ± {100 * se:.1f}"
    return f"{gap} ({lo:.2f}-{hi:.2f}); {beyond}/{len(rows)} > 5"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=300)
    parser.add_argument("--unrestricted", action="store_true", help="the rule before")
    args = parser.parse_args(argv)
    rule = "unrestricted anchor draws" if args.unrestricted else "anchor draws in grade order"
    print(f"Rule 3a ({rule}), exact Gaussian posteriors, {args.replicates} replicates a cell")
    print("| anchors | " + " | ".join(f"{c} cpe" for c in SE) + " |")
    print("|---" * (len(SE) + 1) + "|")
    for layout in LAYOUTS:
        cells = []
        for cpe, se in SE.items():
            clusters = [
                replicate(layout, se, 1000 * cpe + r, not args.unrestricted)
                for r in range(args.replicates)
            ]
            cells.append(largest_gap(clusters))
        print(f"| {layout} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
