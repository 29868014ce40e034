"""Grade-confidence harness: only the grade checkpoint of ``bench_calibration.py``.

Same nets, judge, seeds and checkpoints as :mod:`bench_calibration` (``make_net``: four
anchors drawn like the students and graded by their true order; the true grade of a
student is the grade of its true score on the anchors' true calibration), but only the
grade projection at 8, 12 and 20 cpe, for one strategy and size at a time, so that many
replicates fit in a short run. Per checkpoint it records every student's stated confidence
and whether the projected grade is the true one, for the product's projection
(:func:`cj_runner.core.projection.project_grades` with the posterior covariance, rule 3a:
anchor draws in grade order).

``--alternatives`` (alias ``--ordered``, its name while the grade-ordered draws were the
alternative) adds, on the same posteriors, the rule before (rule 3a with unrestricted
anchor draws) and an oracle that plugs the anchors' true scores into each student's
conditional posterior (the students' part of the uncertainty alone). ``--diagnostics``
adds, per node, the posterior SD against the actual error (anchors and students by their
true z), and where the boundaries sit: true minus shown (the isotonic fit of the posterior
means) and true minus the mean of rule 3a's per-draw boundaries.

``--centred`` adds rule 3a with the drawn boundaries centred on the shown ones (each
draw's boundaries shifted by the mean, or the median, over the draws minus the shown
boundary; measured and not adopted: docs/statistics.md). Every run ends with a summary:
per cell (sizes pooled, each size, each cpe) and rule, the bin furthest from zero;
``--by-cpe`` prints each rule's table per cpe too, ``--by-grade`` each rule's stated
confidence against its accuracy per projected grade.

``--anchors`` (sensitivity checks besides the benchmark's ``prior``): ``prior12`` (12
anchors drawn like the students, three a grade by their true order: the issue's setup),
``fixed`` (four anchors at the 20/40/60/80 percentiles in every net, the benchmark's
placement before), ``spread`` (10/35/65/90), ``narrow`` (30/45/55/70) or ``fixed12`` (12
anchors, three per grade, at the centres of 12 equal slices of the students'
distribution). A posterior is calibrated on average over where its model says anchors
sit, not for a fixed placement (``bench_grade_layouts.py`` shows it with exact
posteriors). The true grade is always the grade of the true score on the anchors' true
isotonic calibration.

``--anchor-weight K`` runs the batches with ``ANCHOR_WEIGHT=K`` (anchors chosen about K
times as often as a student, in the same budget). Every run prints the cost side too: per
size and checkpoint, the students' RMS error (posterior means against the centred truth),
their Spearman correlation with the truth, the comparisons per anchor and per student,
and the anchors' RMS posterior SD.

Run: ``nice -n 10 python benchmarks/bench_grades.py --strategy random --sizes 24,100
--replicates 120,40 --alternatives --by-cpe --by-grade`` (about 5 minutes in one process at
a load average of 3); the issue's setup: ``--sizes 60 --replicates 100 --anchors prior12``.
Every gap comes with its Monte Carlo standard error (replicates as clusters, as in
:func:`bench_calibration.calibration_bins`).
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_calibration as bc  # noqa: E402

from cj_runner.core.posterior import score_posterior  # noqa: E402
from cj_runner.core.projection import (  # noqa: E402
    calibrate,
    drawn_boundaries,
    grade_probabilities,
    joint_grade_probabilities,
)
from cj_runner.core.workflow import WaveEnd, WorkflowState  # noqa: E402
from cj_runner.services.harness import run_harness  # noqa: E402

DRAWS = 1000  # anchor draws, as the product's DEFAULT_DRAWS

ANCHOR_LAYOUTS = {
    "fixed": (0.2, 0.4, 0.6, 0.8),
    "spread": (0.10, 0.35, 0.65, 0.90),
    "narrow": (0.30, 0.45, 0.55, 0.70),
    # the setup: 12 anchors, three per grade, at the centres of 12 equal slices
    "fixed12": tuple((k + 0.5) / 12 for k in range(12)),
}


def make_net(n: int, replicate: int, layout: str) -> tuple[np.ndarray, dict[int, int]]:
    """The benchmark's net, or its anchors placed per ``layout`` (module docstring)."""
    if layout == "prior":
        return bc.make_net(n, replicate)
    z = np.random.default_rng([13, n, replicate]).standard_normal(n)
    if layout == "prior12":
        anchors = np.sort(np.random.default_rng([14, n, replicate]).standard_normal(12))
    else:
        anchors = np.asarray(stats.norm.ppf(ANCHOR_LAYOUTS[layout]))
    per_grade = anchors.size // len(bc.SCALE.grades)  # in grade order, `per_grade` a grade
    grades = {n + k: k // per_grade for k in range(anchors.size)}
    return np.concatenate([z, anchors]) * bc._sd(), grades


def unrestricted_probabilities(
    m: np.ndarray, cov: np.ndarray, a: np.ndarray, idx: np.ndarray, s: np.ndarray, seed: int
) -> np.ndarray:
    """Rule 3a as it was before the anchor draws kept the grades' order (the alternative
    measured here; not what the product does): the product's function with
    ``grade_order=False``, the same seed."""
    probs = joint_grade_probabilities(
        m,
        cov,
        a.tolist(),
        idx,
        s.tolist(),
        len(bc.SCALE.grades),
        np.ones(len(bc.SCALE.grades)),
        np.random.default_rng(seed),
        DRAWS,
        grade_order=False,
    )
    assert probs is not None
    return probs


def centred_probabilities(
    m: np.ndarray,
    cov: np.ndarray,
    a: np.ndarray,
    idx: np.ndarray,
    s: np.ndarray,
    seed: int,
    centre: str = "mean",
) -> np.ndarray:
    """The product's rule 3a with the drawn boundaries centred on the shown ones (the
    alternative measured here; not what the product does): the same anchor draws (in grade
    order), each draw's boundaries shifted by ``centre_k(b_.k) - bhat_k`` (``centre`` the
    mean or the median over the draws, ``bhat`` the isotonic fit of the posterior means), so
    each keeps its spread and its link to the students' conditional means but not the drift
    of the per-draw fits; a draw whose shifted boundaries cross is sorted (its grade of a
    score stays the number of its boundaries below the score)."""
    k_grades = len(bc.SCALE.grades)
    s_aa, s_sa = cov[np.ix_(a, a)], cov[np.ix_(s, a)]
    gain = np.linalg.solve(s_aa + 1e-9 * float(np.mean(np.diag(s_aa))) * np.eye(a.size), s_sa.T).T
    cond_sd = np.sqrt(np.maximum(np.diag(cov)[s] - np.sum(gain * s_sa, axis=1), 0.0))
    shown = calibrate(m[a], idx, k_grades)
    assert shown is not None
    drawn = drawn_boundaries(m[a], s_aa, idx, k_grades, np.random.default_rng(seed), DRAWS)
    assert drawn is not None
    x_all, cuts = drawn
    middle = cuts.mean(axis=0) if centre == "mean" else np.median(cuts, axis=0)
    cuts = np.sort(cuts - middle + shown[1], axis=1)
    total = np.zeros((s.size, k_grades))
    for x, cut in zip(x_all.T, cuts, strict=True):
        total += grade_probabilities(m[s] + gain @ (x - m[a]), cond_sd, cut, np.ones(k_grades))
    return total / len(cuts)


def oracle_probabilities(
    m: np.ndarray,
    cov: np.ndarray,
    a: np.ndarray,
    s: np.ndarray,
    centred_truth: np.ndarray,
    true_cuts: np.ndarray,
) -> np.ndarray:
    """Rule 3a's student part alone: each student's posterior given the anchors' TRUE scores
    (the conditional normal), against the true boundaries (no anchor uncertainty left)."""
    s_aa, s_sa = cov[np.ix_(a, a)], cov[np.ix_(s, a)]
    gain = np.linalg.solve(s_aa + 1e-9 * float(np.mean(np.diag(s_aa))) * np.eye(a.size), s_sa.T).T
    cond_sd = np.sqrt(np.maximum(np.diag(cov)[s] - np.sum(gain * s_sa, axis=1), 0.0))
    mean = m[s] + gain @ (centred_truth[a] - m[a])
    return grade_probabilities(mean, cond_sd, true_cuts, np.ones(true_cuts.size + 1))


def boundary_shift(
    m: np.ndarray, cov: np.ndarray, a: np.ndarray, idx: np.ndarray, true_cuts: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """True boundaries minus the shown ones (isotonic fit of the posterior means), and true
    boundaries minus the mean of rule 3a's per-draw boundaries (the product's draws)."""
    k_grades = len(bc.SCALE.grades)
    shown = calibrate(m[a], idx, k_grades)
    drawn = drawn_boundaries(
        m[a], cov[np.ix_(a, a)], idx, k_grades, np.random.default_rng(seed), DRAWS
    )
    nan = np.full(k_grades - 1, np.nan)
    return (
        true_cuts - shown[1] if shown is not None else nan,
        true_cuts - drawn[1].mean(axis=0) if drawn is not None else nan,
    )


def _grades(
    wf: WorkflowState,
    cpe: int,
    truth: np.ndarray,
    anchors: dict[int, int],
    diag: bool,
    alternatives: bool,
    centred: bool = False,
) -> dict[str, Any]:
    n = wf.n_nodes
    nodes = sorted(anchors)
    students = np.array([i for i in range(n) if i not in anchors], dtype=np.intp)
    first, second, won = wf.comparison_arrays()
    post = score_posterior(n, first, second, won, order_effect=True, seed=wf.seed + cpe)
    result, true_grade = bc.project_checkpoint(post, truth, anchors, students, wf.seed)
    out: dict[str, Any] = {}
    if result.deferred_reason is None:
        out["grades"] = [
            (p.confidence, bc.SCALE.index(p.grade) == int(t))
            for p, t in zip(result.students, true_grade, strict=True)
        ]
        out["grades_projected"] = [bc.SCALE.index(p.grade) for p in result.students]
    m, cov = np.asarray(post.scores), np.asarray(post.covariance)
    a, idx = np.asarray(nodes, dtype=np.intp), np.array([anchors[i] for i in nodes], dtype=float)
    # the cost side: the students' accuracy, and how the comparisons were shared out
    error = m[students] - (truth - truth.mean())[students]
    per_node = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
    out["accuracy"] = (
        math.sqrt(float(np.mean(error**2))),
        float(stats.spearmanr(m[students], truth[students]).statistic),
        float(per_node[a].mean()),
        float(per_node[students].mean()),
        math.sqrt(float(np.mean(np.diag(cov)[a]))),
    )
    if alternatives and result.deferred_reason is None:
        probs = unrestricted_probabilities(m, cov, a, idx, students, wf.seed)
        best = probs.argmax(axis=1)
        out["unrestricted"] = [
            (float(p[b]), int(b) == int(t)) for p, b, t in zip(probs, best, true_grade, strict=True)
        ]
        out["unrestricted_projected"] = best.tolist()
    if centred and result.deferred_reason is None:
        for key, centre in (("centred_mean", "mean"), ("centred_median", "median")):
            probs = centred_probabilities(m, cov, a, idx, students, wf.seed, centre)
            best = probs.argmax(axis=1)
            out[key] = [
                (float(p[b]), int(b) == int(t))
                for p, b, t in zip(probs, best, true_grade, strict=True)
            ]
            out[f"{key}_projected"] = best.tolist()
    true_cuts = calibrate(truth[nodes] - truth.mean(), idx, len(bc.SCALE.grades))
    assert true_cuts is not None
    if alternatives and result.deferred_reason is None:
        probs = oracle_probabilities(m, cov, a, students, truth - truth.mean(), true_cuts[1])
        best = probs.argmax(axis=1)
        out["oracle"] = [
            (float(p[b]), int(b) == int(t)) for p, b, t in zip(probs, best, true_grade, strict=True)
        ]
        out["oracle_projected"] = best.tolist()
    if diag:
        out["shift"] = boundary_shift(m, cov, a, idx, true_cuts[1], wf.seed)
        out["post"] = (m, cov, true_grade, truth)
        error = np.asarray(post.scores) - (truth - truth.mean())
        z = truth / bc._sd()
        out["diag"] = [
            (float(z[i]), i in anchors, float(post.se[i]), float(error[i])) for i in range(n)
        ]
    return out


def run_one(args: tuple[int, str, int, str, bool, bool, bool, float]) -> dict[str, Any]:
    n, strategy, replicate, layout, diag, alternatives, centred, anchor_weight = args
    truth, anchors = make_net(n, replicate, layout)
    nodes = len(truth)
    out: dict[str, Any] = {"n": n, "replicate": replicate}
    pending = list(bc.GRADE_CPE)

    def on_wave(wf: WorkflowState, end: WaveEnd) -> None:
        while pending and 2.0 * wf.successes / nodes >= pending[0]:
            cpe = pending.pop(0)
            out[cpe] = _grades(wf, cpe, truth, anchors, diag, alternatives, centred)

    run_harness(
        bc.BTJudge(true_scores=truth),
        bc._settings(strategy, ANCHOR_WEIGHT=anchor_weight),
        total_budget=max(bc.GRADE_CPE) * nodes // 2 + 1,
        n_students=n,
        seed=1000 * replicate + n,
        on_wave=on_wave,
        anchor_grades=anchors,
        n_grades=4,
    )
    return out


def _clusters(
    results: list[dict[str, Any]], key: str, cpes: tuple[int, ...] = bc.GRADE_CPE
) -> list[list[tuple[float, bool]]]:
    """One cluster per run (its checkpoints share the run's design and calibration)."""
    return [[p for c in cpes for p in r.get(c, {}).get(key, [])] for r in results]


def grade_lines(
    results: list[dict[str, Any]],
    label: str,
    key: str = "grades",
    cpes: tuple[int, ...] = bc.GRADE_CPE,
) -> list[str]:
    clusters = _clusters(results, key, cpes)
    lines = [
        f"{label}: {len(results)} runs",
        "| stated confidence | students | mean stated | observed | gap (points) |",
        "|---|---|---|---|---|",
    ]
    for lo, hi, count, stated, observed, se in bc.calibration_bins(clusters):
        lines.append(
            f"| {lo:.2f}-{hi:.2f} | {count} | {bc._pct(stated)} | {bc._pct(observed)} | "
            f"{100 * (observed - stated):+.1f} ± {100 * se:.1f} |"
        )
    return lines


RULES = {
    "grades": "rule 3a (the product: anchor draws in grade order)",
    "centred_mean": "centred on the shown boundaries (mean)",
    "centred_median": "centred on the shown boundaries (median)",
    "unrestricted": "unrestricted anchor draws (the rule before)",
    "oracle": "oracle (true anchor scores)",
}


def summary_lines(results: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """Per cell (sizes pooled and alone, each cpe alone), per rule: the bin (>= MIN_BIN
    students) furthest from zero, and how many bins are more than 5 points off."""
    sizes = sorted({r["n"] for r in results})
    cells: list[tuple[str, list[dict[str, Any]], tuple[int, ...]]] = [
        ("pooled", results, bc.GRADE_CPE)
    ]
    cells += [(f"n = {n}", [r for r in results if r["n"] == n], bc.GRADE_CPE) for n in sizes]
    cells += [(f"{c} cpe", results, (c,)) for c in bc.GRADE_CPE]
    lines = [
        "Largest gap per cell (bins with >= 50 students; observed - stated, points, ± MC SE; "
        "'k/m > 5': bins more than 5 points off)",
        "| cell | " + " | ".join(RULES[k] for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, rows, cpes in cells:
        entries = []
        for key in keys:
            bins = bc.calibration_bins(_clusters(rows, key, cpes))
            if not bins:
                entries.append("-")
                continue
            lo, hi, _, stated, observed, se = max(bins, key=lambda b: abs(b[4] - b[3]))
            beyond = sum(abs(b[4] - b[3]) > 0.05 for b in bins)
            entries.append(
                f"{100 * (observed - stated):+.1f} ± {100 * se:.1f} ({lo:.2f}-{hi:.2f}); "
                f"{beyond}/{len(bins)} > 5"
            )
        lines.append(f"| {name} | " + " | ".join(entries) + " |")
    return lines


def by_grade_lines(results: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """Per rule and projected grade (all sizes and checkpoints): students, mean stated
    confidence, observed accuracy, gap ± MC SE (runs as clusters, a ratio estimator)."""
    lines = [
        "Confidence by projected grade (all sizes, 8/12/20 cpe; gap = observed - stated, "
        "points, ± MC SE)",
        "| rule | projected | students | mean stated | observed | gap (points) |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys:
        for g, grade in enumerate(bc.SCALE.grades):
            clusters = [
                [
                    claim
                    for c in bc.GRADE_CPE
                    for claim, projected in zip(
                        r.get(c, {}).get(key, []),
                        r.get(c, {}).get(f"{key}_projected", []),
                        strict=True,
                    )
                    if projected == g
                ]
                for r in results
            ]
            total, stated, observed, se = bc.clustered_gap(clusters)
            if total == 0:
                continue
            lines.append(
                f"| {RULES[key]} | {grade} | {total} | {bc._pct(stated)} | "
                f"{bc._pct(observed)} | {100 * (observed - stated):+.1f} ± {100 * se:.1f} |"
            )
    return lines


def accuracy_lines(results: list[dict[str, Any]]) -> list[str]:
    """The students' accuracy per size and checkpoint (the cost of ``--anchor-weight``):
    RMS error of the posterior means against the centred truth, Spearman with the truth,
    comparisons per anchor and per student, the anchors' RMS posterior SD; means over runs
    ± MC SE."""
    lines = [
        "Students' accuracy and the comparisons' share (mean over runs ± MC SE)",
        "| n | cpe | runs | RMS error (students) | Spearman | comparisons per anchor | "
        "per student | anchor posterior SD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in results}):
        for cpe in bc.GRADE_CPE:
            rows = np.array([r[cpe]["accuracy"] for r in results if r["n"] == n and cpe in r])
            if rows.size == 0:
                continue
            k = len(rows)
            mean = rows.mean(axis=0)
            se = rows.std(axis=0, ddof=1) / math.sqrt(k) if k > 1 else np.full(5, np.nan)
            lines.append(
                f"| {n} | {cpe} | {k} | {mean[0]:.3f} ± {se[0]:.3f} | {mean[1]:.3f} ± {se[1]:.3f} "
                f"| {mean[2]:.1f} | {mean[3]:.1f} | {mean[4]:.2f} |"
            )
    return lines


def diag_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Boundaries: true minus shown (isotonic fit of the posterior means) and true minus the "
        "mean of rule 3a's per-draw boundaries, logits, mean over runs (D|C, C|B, B|A)",
        "| cpe | true - shown | true - mean of draws |",
        "|---|---|---|",
    ]
    for cpe in bc.GRADE_CPE:
        shifts = [r[cpe]["shift"] for r in results if "shift" in r.get(cpe, {})]
        if shifts:
            shown = np.nanmean([sh[0] for sh in shifts], axis=0)
            drawn = np.mean([sh[1] for sh in shifts], axis=0)
            lines.append(
                f"| {cpe} | {' '.join(f'{v:+.2f}' for v in shown)} | "
                f"{' '.join(f'{v:+.2f}' for v in drawn)} |"
            )
    lines += [
        "",
        "Posterior SD vs actual error (RMS over runs), per checkpoint",
        "| cpe | nodes | true z | count | RMS posterior SD | RMS error | mean error |",
        "|---|---|---|---|---|---|---|",
    ]
    edges = (-9.0, -1.5, -0.6, 0.0, 0.6, 1.5, 9.0)
    for cpe in bc.GRADE_CPE:
        rows = [d for r in results for d in r.get(cpe, {}).get("diag", [])]
        if not rows:
            continue
        arr = np.array([(z, a, s, e) for z, a, s, e in rows], dtype=float)
        places = sorted(set(arr[arr[:, 1] == 1, 0].round(3)))
        if len(places) <= 12:  # anchors at fixed places: one row each
            for z0 in places:
                sel = (arr[:, 1] == 1) & (np.abs(arr[:, 0] - z0) < 1e-3)
                lines.append(_diag_row(cpe, "anchor", f"{z0:+.2f}", arr[sel]))
        else:  # anchors drawn like the students: by true z, as the students
            for lo, hi in itertools.pairwise(edges):
                sel = (arr[:, 1] == 1) & (arr[:, 0] >= lo) & (arr[:, 0] < hi)
                lines.append(_diag_row(cpe, "anchor", f"{lo:+.1f}..{hi:+.1f}", arr[sel]))
        for lo, hi in itertools.pairwise(edges):
            sel = (arr[:, 1] == 0) & (arr[:, 0] >= lo) & (arr[:, 0] < hi)
            lines.append(_diag_row(cpe, "student", f"{lo:+.1f}..{hi:+.1f}", arr[sel]))
    return lines


def _diag_row(cpe: int, kind: str, where: str, arr: np.ndarray) -> str:
    if arr.size == 0:
        return f"| {cpe} | {kind} | {where} | 0 | - | - | - |"
    sd = math.sqrt(float(np.mean(arr[:, 2] ** 2)))
    rms = math.sqrt(float(np.mean(arr[:, 3] ** 2)))
    mean = float(arr[:, 3].mean())
    return f"| {cpe} | {kind} | {where} | {len(arr)} | {sd:.3f} | {rms:.3f} | {mean:+.3f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="random")
    parser.add_argument("--sizes", default="24,100")
    parser.add_argument("--replicates", default="120,40", help="per size")
    parser.add_argument("--offset", type=int, default=0, help="first replicate number")
    parser.add_argument(
        "--anchors",
        default="prior",
        choices=["prior", "prior12", "fixed", "spread", "narrow", "fixed12"],
    )
    parser.add_argument(
        "--anchor-weight",
        type=float,
        default=1.0,
        help="the ANCHOR_WEIGHT setting of the runs (1: anchors chosen like students)",
    )
    parser.add_argument("--diagnostics", action="store_true")
    parser.add_argument(
        "--alternatives",
        "--ordered",  # its name while the grade-ordered draws were the alternative
        dest="alternatives",
        action="store_true",
        help="also the rule before (unrestricted anchor draws) and the oracle (true anchors)",
    )
    parser.add_argument(
        "--centred",
        action="store_true",
        help="also rule 3a with the drawn boundaries centred on the shown ones (mean, median)",
    )
    parser.add_argument(
        "--by-cpe", action="store_true", help="also each rule's table per cpe (sizes pooled)"
    )
    parser.add_argument(
        "--by-grade", action="store_true", help="also each rule's confidence by projected grade"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--save", type=Path, default=None, help="pickle the raw results here")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    reps = [int(x) for x in args.replicates.split(",")]
    tasks = [
        (
            n,
            args.strategy,
            args.offset + r,
            args.anchors,
            args.diagnostics,
            args.alternatives,
            args.centred,
            args.anchor_weight,
        )
        for n, k in zip(sizes, reps, strict=True)
        for r in range(k)
    ]
    tasks.sort(key=lambda t: -t[0])
    start = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run_one, tasks))
    else:
        results = [run_one(t) for t in tasks]
    elapsed = time.perf_counter() - start
    if args.save is not None:
        args.save.write_bytes(pickle.dumps(results))
    lines = []
    for n in sizes:
        lines += grade_lines([r for r in results if r["n"] == n], f"{args.strategy} n={n}")
        lines.append("")
    if len(sizes) > 1:
        lines += grade_lines(results, f"{args.strategy} all sizes")
        lines.append("")
    if args.alternatives:
        label = RULES["unrestricted"]
        for n in sizes:
            rows = [r for r in results if r["n"] == n]
            lines += grade_lines(rows, f"{label}, n={n}", "unrestricted")
            lines.append("")
        if len(sizes) > 1:
            lines += grade_lines(results, f"{label}, all sizes", "unrestricted")
            lines.append("")
        lines += grade_lines(results, "oracle: true anchor scores, all sizes", "oracle")
        lines.append("")
    if args.centred:
        for key in ("centred_mean", "centred_median"):
            for n in sizes:
                rows = [r for r in results if r["n"] == n]
                lines += grade_lines(rows, f"{RULES[key]}, n={n}", key)
                lines.append("")
            if len(sizes) > 1:
                lines += grade_lines(results, f"{RULES[key]}, all sizes", key)
                lines.append("")
    keys = ["grades"]
    keys += ["centred_mean", "centred_median"] if args.centred else []
    keys += ["unrestricted", "oracle"] if args.alternatives else []
    if args.by_cpe:
        for key in keys:
            for c in bc.GRADE_CPE:
                lines += grade_lines(results, f"{RULES[key]}, {c} cpe, all sizes", key, (c,))
                lines.append("")
    lines += summary_lines(results, keys)
    lines.append("")
    if args.by_grade:
        lines += by_grade_lines(results, keys)
        lines.append("")
    lines += accuracy_lines(results)
    lines.append("")
    if args.diagnostics:
        lines += diag_lines(results)
        lines.append("")
    command = "python benchmarks/bench_grades.py " + " ".join(argv or sys.argv[1:])
    lines.append(f"{len(tasks)} runs in {elapsed:.0f} s (`{command.strip()}`)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
