"""Grade-confidence harness: only the grade checkpoint of ``bench_calibration.py``.

Same nets, judge, seeds and checkpoints as :mod:`bench_calibration` (``make_net``:
four anchors at the true 20/40/60/80 percentiles; the true grade of a student is the grade
of its true score on the anchors' true calibration), but only the grade projection at 8,
12 and 20 cpe, for one strategy and size at a time, so that many replicates fit in a
short run. Per checkpoint it records every student's stated confidence and whether the
projected grade is the true one, for the product's projection
(:func:`cj_runner.core.projection.project_grades` with the posterior covariance, rule 3a).

``--ordered`` adds, on the same posteriors, an alternative rule that is not the product's:
rule 3a with the anchor draws restricted to scores in the order of their grades (a
truncated normal; the exact use of the known grades when anchors are drawn like students),
and an oracle that plugs the anchors' true scores into each student's conditional
posterior (the students' part of the uncertainty alone). ``--diagnostics`` adds, per node,
the posterior SD against the actual error (anchors by their percentile, students by their
true z), and where the boundaries sit: true minus shown (the isotonic fit of the posterior
means) and true minus the mean of rule 3a's per-draw boundaries.

``--anchors`` (a sensitivity check, not the benchmark's definition): ``fixed`` (the
benchmark), ``prior`` (four anchors drawn like the students, sorted), ``spread`` (at the
10/35/65/90 percentiles) or ``narrow`` (30/45/55/70).

Run: ``nice -n 10 python benchmarks/bench_grades.py --strategy random --sizes 24,100
--replicates 120,40 --ordered --diagnostics --workers 2`` (about 6 minutes on two loaded
cores). Every gap comes with its Monte Carlo standard error
(replicates as clusters, as in :func:`bench_calibration.calibration_bins`).
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
from scipy import special, stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_calibration as bc  # noqa: E402

from cj_runner.core.posterior import score_posterior  # noqa: E402
from cj_runner.core.projection import calibrate, grade_probabilities  # noqa: E402
from cj_runner.core.workflow import WaveEnd, WorkflowState  # noqa: E402
from cj_runner.services.harness import run_harness  # noqa: E402

DRAWS = 1000  # anchor draws, as the product's DEFAULT_DRAWS
ORDERED_SWEEPS = 20  # Gibbs sweeps of the grade-ordered anchor draws

ANCHOR_LAYOUTS = {
    "fixed": bc.ANCHOR_PERCENTILES,
    "spread": (0.10, 0.35, 0.65, 0.90),
    "narrow": (0.30, 0.45, 0.55, 0.70),
}


def make_net(n: int, replicate: int, layout: str) -> tuple[np.ndarray, dict[int, int]]:
    """The benchmark's net, or its anchors placed per ``layout`` (module docstring)."""
    if layout == "fixed":
        return bc.make_net(n, replicate)
    z = np.random.default_rng([13, n, replicate]).standard_normal(n)
    if layout == "prior":
        anchors = np.sort(np.random.default_rng([14, n, replicate]).standard_normal(4))
    else:
        anchors = np.asarray(stats.norm.ppf(ANCHOR_LAYOUTS[layout]))
    return np.concatenate([z, anchors]) * bc._sd(), {n + k: k for k in range(4)}


def _ordered_ok(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Which columns of anchor draws ``x`` keep every lower grade at or below every higher one."""
    ok = np.ones(x.shape[1], dtype=bool)
    for g in np.unique(idx)[:-1]:
        ok &= x[idx == g].max(axis=0) <= x[idx > g].min(axis=0)
    return ok


def _truncated_normal(
    mu: np.ndarray, sd: float, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``N(mu, sd^2)`` truncated to ``[lo, hi]`` by the inverse CDF (in the lower tail)."""
    a, b = (lo - mu) / sd, (hi - mu) / sd
    flip = a > 0
    a2, b2 = np.where(flip, -b, a), np.where(flip, -a, b)
    pa, pb = special.ndtr(a2), special.ndtr(b2)
    z = special.ndtri(np.clip(pa + rng.random(mu.shape) * (pb - pa), 1e-300, 1 - 1e-16))
    z = np.clip(z, a2, b2)
    return np.asarray(mu + sd * np.where(flip, -z, z))


def ordered_anchor_draws(
    m_a: np.ndarray, s_aa: np.ndarray, idx: np.ndarray, rng: np.random.Generator, draws: int
) -> np.ndarray:
    """Draws of ``N(m_a, s_aa)`` restricted to anchor scores in the order of their grades
    (a Gibbs sampler of the truncated normal, Geweke 1991, over parallel chains started from
    unrestricted draws, put in grade order where they were not)."""
    k = m_a.size
    values, vectors = np.linalg.eigh(s_aa)
    x = m_a[:, None] + (vectors * np.sqrt(np.maximum(values, 0.0))) @ rng.standard_normal(
        (k, draws)
    )
    ok = _ordered_ok(x, idx)
    sorted_x = np.empty_like(x)
    sorted_x[np.lexsort((np.arange(k), idx))] = np.sort(x, axis=0)
    x = np.where(ok[None, :], x, sorted_x)
    prec = np.linalg.inv(s_aa + 1e-9 * float(np.mean(np.diag(s_aa))) * np.eye(k))
    for _ in range(ORDERED_SWEEPS):
        for i in range(k):
            dev = x - m_a[:, None]
            mu = m_a[i] - (prec[i] @ dev - prec[i, i] * dev[i]) / prec[i, i]
            lower, higher = idx < idx[i], idx > idx[i]
            lo = x[lower].max(axis=0) if lower.any() else np.full(draws, -np.inf)
            hi = x[higher].min(axis=0) if higher.any() else np.full(draws, np.inf)
            x[i] = _truncated_normal(mu, 1.0 / math.sqrt(prec[i, i]), lo, hi, rng)
    return x


def ordered_probabilities(
    m: np.ndarray, cov: np.ndarray, a: np.ndarray, idx: np.ndarray, s: np.ndarray, seed: int
) -> np.ndarray:
    """The product's rule 3a with the anchor draws restricted to grade order (the
    alternative measured here; not what the product does)."""
    k_grades = len(bc.SCALE.grades)
    s_aa, s_sa = cov[np.ix_(a, a)], cov[np.ix_(s, a)]
    gain = np.linalg.solve(s_aa + 1e-9 * float(np.mean(np.diag(s_aa))) * np.eye(a.size), s_sa.T).T
    cond_sd = np.sqrt(np.maximum(np.diag(cov)[s] - np.sum(gain * s_sa, axis=1), 0.0))
    x_all = ordered_anchor_draws(m[a], s_aa, idx, np.random.default_rng(seed), DRAWS)
    total = np.zeros((s.size, k_grades))
    for d in range(DRAWS):
        x = x_all[:, d]
        cal = calibrate(x, idx, k_grades)
        assert cal is not None
        total += grade_probabilities(m[s] + gain @ (x - m[a]), cond_sd, cal[1], np.ones(k_grades))
    return total / DRAWS


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
    boundaries minus the mean of the per-draw boundaries of rule 3a (unrestricted draws)."""
    k_grades = len(bc.SCALE.grades)
    shown = calibrate(m[a], idx, k_grades)
    s_aa = cov[np.ix_(a, a)]
    values, vectors = np.linalg.eigh(s_aa)
    x = m[a][:, None] + (vectors * np.sqrt(np.maximum(values, 0.0))) @ np.random.default_rng(
        seed
    ).standard_normal((a.size, DRAWS))
    cuts = [c[1] for d in range(DRAWS) if (c := calibrate(x[:, d], idx, k_grades)) is not None]
    nan = np.full(k_grades - 1, np.nan)
    return (true_cuts - shown[1] if shown is not None else nan), true_cuts - np.mean(cuts, axis=0)


def _grades(
    wf: WorkflowState,
    cpe: int,
    truth: np.ndarray,
    anchors: dict[int, int],
    diag: bool,
    ordered: bool,
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
    m, cov = np.asarray(post.scores), np.asarray(post.covariance)
    a, idx = np.asarray(nodes, dtype=np.intp), np.array([anchors[i] for i in nodes], dtype=float)
    if ordered and result.deferred_reason is None:
        probs = ordered_probabilities(m, cov, a, idx, students, wf.seed)
        best = probs.argmax(axis=1)
        out["ordered"] = [
            (float(p[b]), int(b) == int(t)) for p, b, t in zip(probs, best, true_grade, strict=True)
        ]
    true_cuts = calibrate(truth[nodes] - truth.mean(), idx, len(bc.SCALE.grades))
    assert true_cuts is not None
    if ordered and result.deferred_reason is None:
        probs = oracle_probabilities(m, cov, a, students, truth - truth.mean(), true_cuts[1])
        best = probs.argmax(axis=1)
        out["oracle"] = [
            (float(p[b]), int(b) == int(t)) for p, b, t in zip(probs, best, true_grade, strict=True)
        ]
    if diag:
        out["shift"] = boundary_shift(m, cov, a, idx, true_cuts[1], wf.seed)
        out["post"] = (m, cov, true_grade, truth)
        error = np.asarray(post.scores) - (truth - truth.mean())
        z = truth / bc._sd()
        out["diag"] = [
            (float(z[i]), i in anchors, float(post.se[i]), float(error[i])) for i in range(n)
        ]
    return out


def run_one(args: tuple[int, str, int, str, bool, bool]) -> dict[str, Any]:
    n, strategy, replicate, layout, diag, ordered = args
    truth, anchors = make_net(n, replicate, layout)
    nodes = len(truth)
    out: dict[str, Any] = {"n": n, "replicate": replicate}
    pending = list(bc.GRADE_CPE)

    def on_wave(wf: WorkflowState, end: WaveEnd) -> None:
        while pending and 2.0 * wf.successes / nodes >= pending[0]:
            cpe = pending.pop(0)
            out[cpe] = _grades(wf, cpe, truth, anchors, diag, ordered)

    run_harness(
        bc.BTJudge(true_scores=truth),
        bc._settings(strategy),
        total_budget=max(bc.GRADE_CPE) * nodes // 2 + 1,
        n_students=n,
        seed=1000 * replicate + n,
        on_wave=on_wave,
        anchor_grades=anchors,
        n_grades=4,
    )
    return out


def grade_lines(results: list[dict[str, Any]], label: str, key: str = "grades") -> list[str]:
    clusters = [[p for c in bc.GRADE_CPE for p in r.get(c, {}).get(key, [])] for r in results]
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
        for z0 in sorted(set(arr[arr[:, 1] == 1, 0].round(3))):
            sel = (arr[:, 1] == 1) & (np.abs(arr[:, 0] - z0) < 1e-3)
            lines.append(_diag_row(cpe, "anchor", f"{z0:+.2f}", arr[sel]))
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
        "--anchors", default="fixed", choices=["fixed", "prior", "spread", "narrow"]
    )
    parser.add_argument("--diagnostics", action="store_true")
    parser.add_argument(
        "--ordered",
        action="store_true",
        help="also the alternative (anchor draws in grade order) and the oracle (true anchors)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--save", type=Path, default=None, help="pickle the raw results here")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    reps = [int(x) for x in args.replicates.split(",")]
    tasks = [
        (n, args.strategy, args.offset + r, args.anchors, args.diagnostics, args.ordered)
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
    if args.ordered:
        for n in sizes:
            lines += grade_lines(
                [r for r in results if r["n"] == n],
                f"anchor draws in grade order, n={n}",
                "ordered",
            )
            lines.append("")
        if len(sizes) > 1:
            lines += grade_lines(results, "anchor draws in grade order, all sizes", "ordered")
            lines.append("")
        lines += grade_lines(results, "oracle: true anchor scores, all sizes", "oracle")
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
