"""Calibration benchmark (issue 13): are the numbers users are shown honest?

Synthetic nets through the convergence harness (:mod:`cj_runner.services.harness`, which
drives the executor's own ``WorkflowState``: the real selection, continuation and
scoring code). Per size ``n`` (students), matching strategy and replicate:

* latent qualities ``~ N(0, sd^2)`` with ``sd`` such that the judge is right on a random
  pair 80% of the time; four anchors drawn like the students and graded 0..3 by their true
  order (``n + 4`` nodes; cpe = 2 x comparisons / nodes); a judge that follows the
  Bradley-Terry model with an order effect of +0.1 logit for position A;
* the run goes to 20 cpe with stability off; after the wave crossing 8, 10, 12 and 20
  cpe it records, over the students, how often the 95% interval covers the (centred)
  true score: the **reported** interval (the hierarchical posterior of
  :mod:`cj_runner.core.posterior`, as the batch scoring shows) and the **MLE** one
  (``score ± 1.96 Fisher SE`` of the final fit, order effect included); at 10 cpe
  whether the order effect's 95% interval covers +0.1 (reported and MLE); at 8, 12 and
  20 cpe every student's projected grade and confidence (joint Monte Carlo over the
  posterior of anchors, in grade order, and students,
  :func:`cj_runner.core.projection.project_grades`) against the grade of its true score
  on the anchors' true calibration.
* misfit flags: :func:`cj_runner.services.misfit_sim.misfit_rates`, the rule the product
  uses (:func:`cj_runner.core.reliability.flag_standardized_misfits` on the final fit),
  per strategy (``random``, ``balanced``, ``infogain``) and size (24, 40 nodes) at 20 cpe:
  the share of nodes flagged with a judge that follows the model exactly (false alarms),
  and whether one planted erratic node (judged at random) is flagged (detection); with the
  default settings (check pairs, ``MISFIT_CHECK_SHARE``) and beside them without check
  pairs (``MISFIT_CHECK_SHARE=0``; ``--misfit-check-shares``).
* the stop check (n = 100): ``TARGET_RELIABILITY=0.8`` with ``AUDIT_SHARE=0.1`` per
  strategy; the robust reliability at the stop against the true one (squared correlation
  of the reported scores with the truth), and whether ``value ± 1.96 SD`` covers it.

Every figure comes with its Monte Carlo standard error (``± se``), computed over
replicates (a replicate's students share one design and one calibration, so they are not
independent): coverage and grade calibration per replicate cluster, rates as binomial.

Run: ``nice -n 10 python benchmarks/bench_calibration.py --workers 2`` (the full run:
about 30 minutes of CPU per worker on a loaded two-core machine) or ``--quick`` (a few
minutes, few replicates: a smoke run, not the figures). Output: the tables on stdout,
markdown to ``--markdown``.
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import os

# one BLAS thread per worker process: the parallelism is over replicates
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from cj_runner.config import Settings  # noqa: E402
from cj_runner.core.bt import fit_bt  # noqa: E402
from cj_runner.core.models import GradeScale  # noqa: E402
from cj_runner.core.posterior import ScorePosterior, score_posterior  # noqa: E402
from cj_runner.core.projection import ProjectionResult, calibrate, project_grades  # noqa: E402
from cj_runner.core.robust import robust_reliability  # noqa: E402
from cj_runner.core.workflow import WaveEnd, WorkflowState  # noqa: E402
from cj_runner.services.harness import (  # noqa: E402
    SimulatedJudge,
    latent_sd_for_accuracy,
    run_harness,
    true_reliability,
)
from cj_runner.services.misfit_sim import misfit_rates  # noqa: E402

STRATEGIES = ("random", "balanced", "swiss", "infogain", "grade_boundary")
ACCURACY = 0.80
ETA = 0.1
CHECKPOINTS = (8, 10, 12, 20)
COVERAGE_CPE = (8, 12, 20)
GRADE_CPE = (8, 12, 20)
ETA_CPE = 10
MISFIT_CPE = 20
MISFIT_SIZES = (24, 40)
MISFIT_STRATEGIES = ("random", "balanced", "infogain")
SCALE = GradeScale(name="four", grades=("D", "C", "B", "A"))
Z95 = 1.959963984540054
BINS = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0001)
MIN_BIN = 50
STOP_SIZE = 100
FULL_REPLICATES = (40, 16)  # per strategy at n <= 30 and above
FULL_STOP_REPLICATES = 6
FULL_MISFIT_REPLICATES = 30
# without check pairs beside the default MISFIT_CHECK_SHARE
MISFIT_CHECK_SHARES = f"0,{Settings().MISFIT_CHECK_SHARE:g}"


@dataclass(frozen=True)
class BTJudge(SimulatedJudge):
    """A judge that follows the Bradley-Terry model exactly, with an order effect (logit);
    ``erratic`` nodes are judged at random."""

    eta: float = ETA
    erratic: tuple[int, ...] = ()

    def p_a_wins(self, a: int, b: int) -> float:
        if a in self.erratic or b in self.erratic:
            return 0.5
        diff = float(self.true_scores[a] - self.true_scores[b]) + self.eta
        return 1.0 / (1.0 + math.exp(-diff))


@dataclass(frozen=True)
class Task:
    kind: str  # "coverage", "misfit" or "stop"
    n: int
    strategy: str
    replicate: int
    check_share: float = 0.0  # MISFIT_CHECK_SHARE of the misfit runs


@cache
def _sd() -> float:
    return latent_sd_for_accuracy(ACCURACY)


def make_net(n: int, replicate: int) -> tuple[np.ndarray, dict[int, int]]:
    """True qualities of ``n`` students + 4 anchors (last), and the anchors' grades.

    The anchors are drawn like the students and graded by their true order (the lowest
    D, the highest A): the model grade projection assumes (anchors are essays like the
    others whose known grades agree with their true qualities). Calibration of a posterior
    holds on average over what its model assumes, not for every fixed placement of the
    anchors; fixed placements are the sensitivity checks of ``bench_grades.py --anchors``."""
    z = np.random.default_rng([13, n, replicate]).standard_normal(n)
    anchors = np.sort(np.random.default_rng([14, n, replicate]).standard_normal(4))
    return np.concatenate([z, anchors]) * _sd(), {n + k: k for k in range(4)}


def _settings(strategy: str, **extra: Any) -> Settings:
    return Settings(
        MATCHING_STRATEGY=strategy, SCORE_STABILITY_THRESHOLD=0, MAX_ITERATIONS=100_000, **extra
    )


def _checkpoint(
    wf: WorkflowState, cpe: int, truth: np.ndarray, anchors: dict[int, int], out: dict[str, Any]
) -> None:
    n = wf.n_nodes
    students = np.array([i for i in range(n) if i not in anchors], dtype=np.intp)
    first, second, won = wf.comparison_arrays()
    centred = (truth - truth.mean())[students]
    mle = fit_bt(n, first, second, won, order_effect=True)
    post = score_posterior(n, first, second, won, order_effect=True, seed=wf.seed + cpe)
    assert mle.se is not None and mle.order_effect is not None
    assert mle.order_effect_se is not None and post.order_effect is not None
    assert post.order_effect_se is not None
    if cpe in COVERAGE_CPE:
        out[f"cov_rep_{cpe}"] = float(
            np.mean(np.abs(post.scores[students] - centred) <= Z95 * post.se[students])
        )
        out[f"cov_mle_{cpe}"] = float(
            np.mean(np.abs(mle.scores[students] - centred) <= Z95 * mle.se[students])
        )
    if cpe == ETA_CPE:
        out["eta_rep"] = (post.order_effect, post.order_effect_se)
        out["eta_mle"] = (mle.order_effect, mle.order_effect_se)
    if cpe in GRADE_CPE:
        result, true_grade = project_checkpoint(post, truth, anchors, students, wf.seed)
        if result.deferred_reason is None:  # else: the anchors' fit came out flat
            out[f"grades_{cpe}"] = [
                (p.confidence, SCALE.index(p.grade) == int(t))
                for p, t in zip(result.students, true_grade, strict=True)
            ]


def project_checkpoint(
    post: ScorePosterior,
    truth: np.ndarray,
    anchors: dict[int, int],
    students: np.ndarray,
    seed: int,
) -> tuple[ProjectionResult, np.ndarray]:
    """The product's grade projection from the posterior users are shown, and each
    student's true grade (the isotonic calibration of the anchors' true scores)."""
    nodes = sorted(anchors)
    true_cal = calibrate(truth[nodes], [anchors[a] for a in nodes], 4)
    assert true_cal is not None
    true_grade = np.searchsorted(true_cal[1], truth[students])
    result = project_grades(
        post.scores,
        post.se,
        nodes,
        [SCALE.grades[anchors[a]] for a in nodes],
        students.tolist(),
        SCALE,
        covariance=post.covariance,
        seed=seed,
    )
    return result, true_grade


def run_coverage(task: Task) -> dict[str, Any]:
    truth, anchors = make_net(task.n, task.replicate)
    nodes = len(truth)
    judge = BTJudge(true_scores=truth)
    out: dict[str, Any] = {"task": task}
    pending = list(CHECKPOINTS)

    def on_wave(wf: WorkflowState, end: WaveEnd) -> None:
        while pending and 2.0 * wf.successes / nodes >= pending[0]:
            _checkpoint(wf, pending.pop(0), truth, anchors, out)

    run_harness(
        judge,
        _settings(task.strategy),
        total_budget=max(CHECKPOINTS) * nodes // 2 + 1,
        n_students=task.n,
        seed=1000 * task.replicate + task.n,
        on_wave=on_wave,
        anchor_grades=anchors,
        n_grades=4,
    )
    return out


def run_misfit(task: Task) -> dict[str, Any]:
    """One replicate of :func:`misfit_rates` (replicate ``k`` of a call with ``seed=0``)."""
    rates = misfit_rates(
        n=task.n,
        cpe=MISFIT_CPE,
        strategy=task.strategy,
        replicates=1,
        seed=task.replicate,
        check_share=task.check_share,
    )
    return {
        "task": task,
        "false_alarm": rates.false_alarm_rate,
        "detected": rates.detection_rate == 1.0,
        "threshold": rates.threshold,
        "min_comparisons": rates.min_comparisons,
    }


def run_stop(task: Task) -> dict[str, Any]:
    truth, anchors = make_net(task.n, 900 + task.replicate)
    nodes = len(truth)
    students = [i for i in range(nodes) if i not in anchors]
    result = run_harness(
        BTJudge(true_scores=truth),
        _settings(task.strategy, TARGET_RELIABILITY=0.8, AUDIT_SHARE=0.1),
        total_budget=40 * nodes // 2,
        n_students=task.n,
        seed=9000 + task.replicate,
        anchor_grades=anchors,
        n_grades=4,
    )
    wf = result.workflow
    assert wf is not None
    first, second, won = wf.comparison_arrays()
    post = score_posterior(nodes, first, second, won, order_effect=True, seed=wf.seed)
    robust = robust_reliability(
        nodes,
        first,
        second,
        won,
        modes=wf.comparison_modes(),
        seed=wf.seed,
        nodes=students,
        strategy=wf.strategy,
    )
    shown = post.scores[students]
    return {
        "task": task,
        "robust": robust.value,
        "robust_sd": robust.detail.get("posterior_sd"),
        "ssr_mle": robust.detail.get("ssr"),
        "true": true_reliability(shown, truth[students]),
        "cpe": 2.0 * wf.successes / nodes,
    }


def _run(task: Task) -> dict[str, Any]:
    if task.kind == "coverage":
        return run_coverage(task)
    if task.kind == "misfit":
        return run_misfit(task)
    return run_stop(task)


# ---------------------------------------------------------------- tables


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:.1f}"


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean of per-replicate values and its Monte Carlo standard error."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def binomial_se(hits: Iterable[bool]) -> tuple[float, float, int]:
    """Share of hits, its binomial standard error and the count."""
    h = np.asarray(list(hits), dtype=float)
    if h.size == 0:
        return math.nan, math.nan, 0
    p = float(h.mean())
    return p, math.sqrt(p * (1.0 - p) / h.size), int(h.size)


def _pm(value: float, se: float) -> str:
    return f"{_pct(value)} ± {_pct(se)}" if math.isfinite(se) else _pct(value)


def coverage_table(results: list[dict[str, Any]], sizes: Iterable[int]) -> list[str]:
    head = " | ".join(f"{c} cpe" for c in COVERAGE_CPE)
    lines = [
        "Coverage of 95% intervals, % ± MC standard error over replicates "
        "(reported posterior / MLE ± 1.96 SE)",
        f"| n | strategy | replicates | {head} |",
        "|---|---|---|" + "---|" * len(COVERAGE_CPE),
    ]
    for n in sizes:
        for s in STRATEGIES:
            rows = [r for r in results if r["task"].n == n and r["task"].strategy == s]
            cells = []
            for c in COVERAGE_CPE:
                rep = mean_se(r[f"cov_rep_{c}"] for r in rows if f"cov_rep_{c}" in r)
                mle = mean_se(r[f"cov_mle_{c}"] for r in rows if f"cov_mle_{c}" in r)
                cells.append(f"{_pm(*rep)} / {_pct(mle[0])}")
            lines.append(f"| {n} | {s} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def calibration_bins(
    clusters: list[list[tuple[float, bool]]],
) -> list[tuple[float, float, int, float, float, float]]:
    """Per confidence bin holding at least :data:`MIN_BIN` students: ``(lo, hi, count,
    mean stated, observed, se of observed - stated)``; the standard error treats each
    cluster (one run, all its checkpoints) as the unit (a ratio estimator)."""
    out = []
    for lo, hi in itertools.pairwise(BINS):
        total, stated, observed, se = clustered_gap(
            [[(c, k) for c, k in cluster if lo <= c < hi] for cluster in clusters]
        )
        if total < MIN_BIN:
            continue
        out.append((lo, min(hi, 1.0), total, stated, observed, se))
    return out


def clustered_gap(
    clusters: list[list[tuple[float, bool]]],
) -> tuple[int, float, float, float]:
    """``(count, mean stated, observed, se of observed - stated)`` of the claims
    ``(confidence, right)`` in ``clusters``; the standard error treats each cluster as the
    unit (a ratio estimator); means are ``nan`` without claims."""
    gaps, counts, stated, ok = [], [], [], []
    for sel in clusters:
        if sel:
            conf = np.array([c for c, _ in sel])
            hit = np.array([k for _, k in sel], dtype=float)
            gaps.append(float(np.sum(hit - conf)))
            counts.append(len(sel))
            stated.append(float(conf.sum()))
            ok.append(float(hit.sum()))
    total = int(sum(counts))
    if total == 0:
        return 0, math.nan, math.nan, math.nan
    gap = sum(gaps) / total
    resid = np.array(gaps) - gap * np.array(counts)
    k = len(counts)
    se = math.sqrt(k / (k - 1) * float(np.sum(resid**2))) / total if k > 1 else math.nan
    return total, sum(stated) / total, sum(ok) / total, se


def grade_table(results: list[dict[str, Any]], strategies: Iterable[str]) -> list[str]:
    lines = [
        "Grade confidence vs observed accuracy (all sizes, 8/12/20 cpe; bins with >= "
        f"{MIN_BIN} students; ± MC standard error of the gap, replicates as clusters)",
        "| strategy | stated confidence | students | mean stated | observed | gap (points) |",
        "|---|---|---|---|---|---|",
    ]
    for s in strategies:
        # one cluster per run: its checkpoints share the run's design and calibration
        clusters = [
            [p for c in GRADE_CPE for p in r.get(f"grades_{c}", [])]
            for r in results
            if r["task"].strategy == s
        ]
        for lo, hi, count, stated, observed, se in calibration_bins(clusters):
            gap = f"{100 * (observed - stated):+.1f}"
            if math.isfinite(se):
                gap += f" ± {100 * se:.1f}"
            lines.append(
                f"| {s} | {lo:.2f}-{hi:.2f} | {count} | {_pct(stated)} | {_pct(observed)} | {gap} |"
            )
    return lines


def eta_table(results: list[dict[str, Any]], sizes: Iterable[int]) -> list[str]:
    """The order effect's coverage, pooled over strategies. The strategies of one
    replicate share its true scores and the judge's random stream, so their runs are not
    independent: the standard error treats each replicate (all its strategies) as one
    cluster."""
    lines = [
        f"Order effect at {ETA_CPE} cpe (true +{ETA} logit): coverage of the 95% interval "
        "(± MC standard error, replicates as clusters)",
        "| n | runs | reported: mean, coverage % | MLE: mean, coverage % |",
        "|---|---|---|---|",
    ]
    pooled: dict[str, list[list[bool]]] = defaultdict(list)
    for n in sizes:
        rows = [r for r in results if r["task"].n == n and "eta_rep" in r]
        if not rows:
            continue
        cells = []
        for key in ("eta_rep", "eta_mle"):
            est = np.array([r[key][0] for r in rows])
            clusters: dict[int, list[bool]] = defaultdict(list)
            for r in rows:
                clusters[r["task"].replicate].append(bool(abs(r[key][0] - ETA) <= Z95 * r[key][1]))
            pooled[key] += list(clusters.values())
            cov, cov_se = cluster_share(list(clusters.values()))
            cells.append(f"{est.mean():+.3f}, {_pm(cov, cov_se)}")
        lines.append(f"| {n} | {len(rows)} | " + " | ".join(cells) + " |")
    if pooled:
        cells = [_pm(*cluster_share(pooled[k])) for k in ("eta_rep", "eta_mle")]
        runs = sum(len(c) for c in pooled["eta_rep"])
        lines.append(f"| all | {runs} | " + " | ".join(cells) + " |")
    return lines


def cluster_share(clusters: list[list[bool]]) -> tuple[float, float]:
    """Share of hits over clusters of runs, and its standard error with the clusters as
    the units (a ratio estimator)."""
    counts = np.array([len(c) for c in clusters], dtype=float)
    hits = np.array([sum(c) for c in clusters], dtype=float)
    total = float(counts.sum())
    if total == 0:
        return math.nan, math.nan
    share = float(hits.sum()) / total
    k = len(clusters)
    if k < 2:
        return share, math.nan
    resid = hits - share * counts
    return share, math.sqrt(k / (k - 1) * float(np.sum(resid**2))) / total


def misfit_table(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return []
    first = results[0]
    lines = [
        f"Misfit flags at {MISFIT_CPE} cpe (misfit_sim.misfit_rates, the product's rule: "
        f"threshold {first['threshold']}, >= {first['min_comparisons']} comparisons; "
        "± MC standard error)",
        "| strategy | n | MISFIT_CHECK_SHARE | runs | false alarms, % of nodes | "
        "erratic node flagged, % of runs |",
        "|---|---|---|---|---|---|",
    ]
    shares = sorted({r["task"].check_share for r in results})
    for s in MISFIT_STRATEGIES:
        for n in MISFIT_SIZES:
            for share in shares:
                rows = [
                    r
                    for r in results
                    if (r["task"].strategy, r["task"].n, r["task"].check_share) == (s, n, share)
                ]
                if not rows:
                    continue
                fa = mean_se(r["false_alarm"] for r in rows)
                det = binomial_se(r["detected"] for r in rows)
                lines.append(
                    f"| {s} | {n} | {share:g} | {len(rows)} | {_pm(*fa)} | {_pm(det[0], det[1])} |"
                )
    return lines


def stop_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"Robust reliability at a TARGET_RELIABILITY=0.8 stop (n = {STOP_SIZE}, AUDIT_SHARE=0.1)",
        "| strategy | runs | cpe at stop | mean error | RMS error | within 0.05 | "
        "value ± 1.96 SD covers | mean SD | SSR (MLE) - true |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in STRATEGIES:
        rows = [r for r in results if r["task"].strategy == s and r["robust"] is not None]
        if not rows:
            continue
        err = np.array([r["robust"] - r["true"] for r in rows])
        sd = np.array([r["robust_sd"] or 0.0 for r in rows])
        ssr = np.array([(r["ssr_mle"] or math.nan) - r["true"] for r in rows])
        lines.append(
            f"| {s} | {len(rows)} | {np.mean([r['cpe'] for r in rows]):.1f} | "
            f"{err.mean():+.3f} | {math.sqrt(float(np.mean(err**2))):.3f} | "
            f"{_pct(float(np.mean(np.abs(err) <= 0.05)))} | "
            f"{_pct(float(np.mean(np.abs(err) <= Z95 * sd)))} | {sd.mean():.3f} | "
            f"{np.nanmean(ssr):+.3f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few replicates)")
    parser.add_argument("--sizes", default="24,100")
    parser.add_argument("--replicates", default=None, help="per size, e.g. 40,10")
    parser.add_argument("--stop-replicates", type=int, default=None)
    parser.add_argument("--misfit-replicates", type=int, default=None)
    parser.add_argument(
        "--misfit-check-shares",
        default=MISFIT_CHECK_SHARES,
        help="MISFIT_CHECK_SHARE values of the misfit runs (comma-separated)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.replicates:
        reps = [int(x) for x in args.replicates.split(",")]
    else:
        small, large = (4, 1) if args.quick else FULL_REPLICATES
        reps = [small if n <= 30 else large for n in sizes]
    stop_reps = args.stop_replicates
    if stop_reps is None:
        stop_reps = 1 if args.quick else FULL_STOP_REPLICATES
    misfit_reps = args.misfit_replicates
    if misfit_reps is None:
        misfit_reps = 2 if args.quick else FULL_MISFIT_REPLICATES
    tasks = [
        Task("coverage", n, s, r)
        for n, k in zip(sizes, reps, strict=True)
        for s in STRATEGIES
        for r in range(k)
    ]
    tasks += [
        Task("misfit", n, s, r, float(share))
        for share in args.misfit_check_shares.split(",")
        for s in MISFIT_STRATEGIES
        for n in MISFIT_SIZES
        for r in range(misfit_reps)
    ]
    tasks += [Task("stop", STOP_SIZE, s, r) for s in STRATEGIES for r in range(stop_reps)]
    # the costliest first, so parallel workers finish together
    tasks.sort(key=lambda t: (t.kind != "coverage", -t.n))
    start = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(_run, tasks))
    else:
        results = [_run(t) for t in tasks]
    elapsed = time.perf_counter() - start
    cover = [r for r in results if r["task"].kind == "coverage"]
    misfit = [r for r in results if r["task"].kind == "misfit"]
    stop = [r for r in results if r["task"].kind == "stop"]
    grouped: dict[str, list[str]] = defaultdict(list)
    grouped["coverage"] = coverage_table(cover, sizes)
    grouped["grades"] = grade_table(cover, STRATEGIES)
    grouped["eta"] = eta_table(cover, sizes)
    grouped["misfit"] = misfit_table(misfit)
    grouped["stop"] = stop_table(stop)
    text = "\n\n".join("\n".join(v) for v in grouped.values())
    command = "python benchmarks/bench_calibration.py " + " ".join(argv or sys.argv[1:])
    text = f"{text}\n\n{len(tasks)} runs in {elapsed:.0f} s (`{command.strip()}`)\n"
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
