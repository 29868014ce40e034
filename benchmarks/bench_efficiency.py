"""Efficiency benchmark (issue 8): comparisons per essay each matching strategy needs.

Synthetic nets, the engine's own selection, continuation and scoring code (through the
convergence harness, :mod:`cj_runner.services.harness`, which drives the same
``WorkflowState`` as the executor). For every size ``n`` (students), judge accuracy
``q``, method and replicate:

* latent qualities ``~ N(0, sd^2)``, ``sd`` calibrated so that the logistic judge
  (noise 1) is right on a random pair with probability ``q``; a +2 percentage-point
  position-A bias; four anchors at the true 20/40/60/80 percentiles with grades 0..3
  (so the net has ``n + 4`` nodes and cpe = 2 x comparisons / (n + 4));
* the run goes to ``--max-cpe`` with stability switched off; after the wave that
  crosses each whole cpe the checkpoint records Spearman and Kendall of the student
  scores vs the truth, the true reliability (squared Pearson correlation), SSR, the
  design-robust reliability (:mod:`cj_runner.core.robust`; at every 4th cpe and at 12),
  exact grade agreement (projected grade from the anchors vs the grade of the true
  score) and the coverage of the 95% intervals ``score +/- 1.96 SE`` of the (centred)
  truth;
* methods: ``random``, ``balanced``, ``swiss``, ``infogain``, ``grade_boundary`` and the
  ``oracle`` (``swiss`` on the true qualities: a practical ceiling).

The summary gives, per method, the cpe at which the *mean* over replicates reaches
Spearman 0.90 and true reliability 0.80 (linear interpolation between checkpoints), the
cpe at which the 10th-percentile replicate reaches it (90% of replicates are there), the
ratios to ``random`` and to the oracle, and at 12 cpe: SSR, split-half and robust
reliability minus the true one, the
coverage of the reported intervals and of the empirical-Bayes posterior's, and the grade
agreement. A stop check (``n = --stop-size``, ``q = 0.80``, when in the grid) runs every
method but the oracle (its design depends on the truth, so no estimate from the answers
can be honest about it) with ``TARGET_RELIABILITY=0.8`` and ``AUDIT_SHARE``
(``--stop-audit-share``, default 0.1) and reports how often the robust reliability at
the stop is within 0.05 of the true one.

``--wave-fraction 0.5`` runs every cell with waves of half the nodes, ``--wave-size 12``
with waves of 12 (the price in calls of the large waves the batch-API mode wants;
docs/batch-api.md).

Run: ``python benchmarks/bench_efficiency.py`` (defaults: sizes 24,100,500; accuracies
0.75,0.8,0.85, for n >= 500 only 0.8; 6 replicates, 1 for n >= 500; 12 stop-check
replicates; all methods; 2 workers; a few minutes on 2 cores). Smaller: ``--sizes 24,100
--accuracies 0.8 --methods random,infogain --replicates 4``. Output: the tables on
stdout, JSON to ``--json`` (default ``benchmarks/results/efficiency.json``) and the
markdown tables to ``--markdown`` (default ``benchmarks/results/efficiency.md``).
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import os

# one BLAS thread per worker process: the parallelism is over replicates
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from cj_runner.config import Settings  # noqa: E402
from cj_runner.core.bt import BTFit  # noqa: E402
from cj_runner.core.projection import calibrate, grade_probabilities  # noqa: E402
from cj_runner.core.reliability import scale_separation_reliability  # noqa: E402
from cj_runner.core.robust import robust_reliability  # noqa: E402
from cj_runner.core.workflow import WaveEnd, WorkflowState  # noqa: E402
from cj_runner.services.harness import (  # noqa: E402
    SimulatedJudge,
    kendall,
    latent_sd_for_accuracy,
    run_harness,
    spearman,
    true_reliability,
)

METHODS = ("random", "balanced", "swiss", "infogain", "grade_boundary", "oracle")
ANCHOR_PERCENTILES = (0.2, 0.4, 0.6, 0.8)
POSITION_BIAS = 0.02
SPEARMAN_TARGET = 0.90
RELIABILITY_TARGET = 0.80
REPORT_CPE = 12
ROBUST_EVERY = 4  # robust reliability at every 4th cpe (and REPORT_CPE): it costs ~20 fits
STOP_ACCURACY = 0.80
LARGE = 500  # sizes from here on use --large-replicates and --large-accuracies


@dataclass(frozen=True)
class Task:
    """One replicate of one (size, accuracy, method) cell, or of the stop check."""

    n: int
    q: float
    method: str
    replicate: int
    seed: int
    max_cpe: int
    wave_size: int
    stop_check: bool = False
    audit_share: float = 0.0
    check_share: float | None = None  # MISFIT_CHECK_SHARE (None: the default)


def wave_size_for(n_nodes: int) -> int:
    """Default wave: the spec's 12 up to ~100 nodes, a quarter of the nodes above."""
    return max(12, n_nodes // 4)


@cache
def _latent_sd(q: float) -> float:
    return latent_sd_for_accuracy(q)


def make_net(n: int, q: float, seed: int, replicate: int) -> tuple[np.ndarray, dict[int, int]]:
    """True qualities of ``n`` students + 4 anchors (last), and the anchors' grades."""
    sd = _latent_sd(q)
    z = np.random.default_rng([seed, n, replicate]).standard_normal(n)
    anchors = np.asarray(stats.norm.ppf(ANCHOR_PERCENTILES))
    truth = np.concatenate([z, anchors]) * sd
    return truth, {n + k: k for k in range(len(ANCHOR_PERCENTILES))}


def _grade_agreement(
    fit: BTFit, truth: np.ndarray, anchors: dict[int, int], students: np.ndarray
) -> float:
    """Share of students whose projected grade equals the grade of their true quality."""
    nodes = sorted(anchors)
    grades = np.asarray([anchors[a] for a in nodes], dtype=float)
    k = len(nodes)
    true_cal = calibrate(truth[nodes], grades, k)
    est_cal = calibrate(np.asarray(fit.scores)[nodes], grades, k)
    if true_cal is None or est_cal is None or fit.se is None:
        return float("nan")
    true_grade = np.searchsorted(true_cal[1], truth[students])
    probs = grade_probabilities(
        np.asarray(fit.scores)[students], np.asarray(fit.se)[students], est_cal[1], np.ones(k)
    )
    return float(np.mean(np.argmax(probs, axis=1) == true_grade))


def checkpoint_metrics(
    wf: WorkflowState,
    fit: BTFit,
    truth: np.ndarray,
    anchors: dict[int, int],
    *,
    robust: bool,
    split_half: bool = False,
) -> dict[str, float]:
    """Every accuracy metric of one fit (students only; the truth is centred like it)."""
    students = np.array([i for i in range(wf.n_nodes) if i not in anchors], dtype=np.intp)
    scores = np.asarray(fit.scores)
    assert fit.se is not None
    se = np.asarray(fit.se)
    centred = truth - truth.mean()
    out = {
        "cpe": 2.0 * wf.successes / wf.n_nodes,
        "spearman": spearman(scores[students], truth[students]),
        "kendall": kendall(scores[students], truth[students]),
        "true_reliability": true_reliability(scores[students], truth[students]),
        "ssr": scale_separation_reliability(scores[students], se[students]),
        "coverage95": float(
            np.mean(np.abs(scores[students] - centred[students]) <= 1.96 * se[students])
        ),
        "grade_agreement": _grade_agreement(fit, truth, anchors, students),
    }
    if robust:
        first, second, first_won = wf.comparison_arrays()
        eb = wf.posterior()
        assert eb.fit.se is not None
        eb_se = np.asarray(eb.fit.se)[students]
        eb_err = np.abs(np.asarray(eb.fit.scores)[students] - centred[students])
        out["coverage95_eb"] = float(np.mean(eb_err <= 1.96 * eb_se))
        value = robust_reliability(
            wf.n_nodes,
            first,
            second,
            first_won,
            modes=wf.comparison_modes(),
            seed=wf.seed,
            prior_precision=wf.prior_precision,
            nodes=students.tolist(),
            posterior=eb,
            strategy=wf.strategy,
        ).value
        out["robust"] = float("nan") if value is None else value
    if split_half:
        first, second, first_won = wf.comparison_arrays()
        half = robust_reliability(
            wf.n_nodes,
            first,
            second,
            first_won,
            seed=wf.seed,
            prior_precision=wf.prior_precision,
            nodes=students.tolist(),
            method="split_half",
        ).value
        out["split_half"] = float("nan") if half is None else half
    return out


def settings_for(task: Task, n_nodes: int) -> Settings:
    """The CJ settings of a benchmark run: stability off, budget at ``max_cpe``."""
    strategy = "swiss" if task.method == "oracle" else task.method
    checks = {} if task.check_share is None else {"MISFIT_CHECK_SHARE": task.check_share}
    return Settings(
        **checks,
        MATCHING_STRATEGY=strategy,
        SCORE_STABILITY_THRESHOLD=0.0,
        MAX_ITERATIONS=1_000_000,
        MAX_PAIRWISE_COMPARISONS=math.ceil(task.max_cpe * n_nodes / 2),
        COMPARISONS_PER_STABILITY_CHECK_ITERATION=task.wave_size,
        AUDIT_SHARE=task.audit_share,
        TARGET_RELIABILITY=RELIABILITY_TARGET if task.stop_check else None,
    )


def run_task(task: Task) -> dict[str, Any]:
    """One replicate: the checkpoints (or, for the stop check, the state at the stop)."""
    truth, anchors = make_net(task.n, task.q, task.seed, task.replicate)
    n_nodes = truth.size
    judge = SimulatedJudge(truth, position_bias=POSITION_BIAS)
    settings = settings_for(task, n_nodes)
    started = time.perf_counter()
    points: list[dict[str, float]] = []
    next_cpe = 1

    def on_wave(wf: WorkflowState, end: WaveEnd) -> None:
        nonlocal next_cpe
        cpe = 2.0 * wf.successes / n_nodes
        if task.stop_check or cpe < next_cpe or end.fit is None:
            return
        level = math.floor(cpe + 1e-9)
        fit = end.fit if end.fit.se is not None else wf.fit(compute_se=True)
        robust = level % ROBUST_EVERY == 0 or level == REPORT_CPE
        metrics = checkpoint_metrics(
            wf, fit, truth, anchors, robust=robust, split_half=level == REPORT_CPE
        )
        points.append({"level": level, **metrics})
        next_cpe = level + 1

    result = run_harness(
        judge,
        settings,
        seed=task.replicate,
        on_wave=on_wave,
        anchor_grades=anchors,
        n_grades=len(anchors),
        selection_scores=truth if task.method == "oracle" else None,
    )
    out: dict[str, Any] = {"task": asdict(task), "seconds": time.perf_counter() - started}
    if task.stop_check:
        assert result.workflow is not None and result.final_fit is not None
        final = checkpoint_metrics(result.workflow, result.final_fit, truth, anchors, robust=False)
        final["robust"] = (
            float("nan") if result.robust_reliability is None else result.robust_reliability
        )
        final["stopped_on_target"] = float(result.stop_reason == "target_reliability")
        out["stop"] = final
    else:
        out["points"] = points
    return out


# --------------------------------------------------------------------------- summary


def crossing(cpes: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """First cpe where ``values`` reaches ``target`` (linear between checkpoints)."""
    prev: tuple[float, float] | None = None
    for c, v in zip(cpes, values, strict=True):
        if not math.isnan(v) and v >= target:
            if prev is None or math.isnan(prev[1]):
                return c
            c0, v0 = prev
            return c0 + (target - v0) / (v - v0) * (c - c0)
        prev = (c, v)
    return None


def _curves(runs: list[dict[str, Any]], metric: str) -> tuple[list[float], np.ndarray]:
    """Checkpoint levels shared by all replicates and the ``replicates x levels`` values."""
    levels = sorted(
        set.intersection(*({p["level"] for p in r["points"]} for r in runs)) if runs else set()
    )
    table = np.full((len(runs), len(levels)), np.nan)
    for i, r in enumerate(runs):
        by_level = {p["level"]: p for p in r["points"]}
        for j, level in enumerate(levels):
            table[i, j] = by_level[level].get(metric, np.nan)
    return [float(x) for x in levels], table


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (n, q, method): crossings, ratios and the 12-cpe figures; plus the stop check."""
    cells: dict[tuple[int, float, str], list[dict[str, Any]]] = {}
    stops: dict[str, list[dict[str, float]]] = {}
    for r in results:
        t = r["task"]
        if t["stop_check"]:
            stops.setdefault(t["method"], []).append(r["stop"])
        else:
            cells.setdefault((t["n"], t["q"], t["method"]), []).append(r)
    rows = []
    for (n, q, method), runs in sorted(cells.items(), key=lambda kv: kv[0]):
        row: dict[str, Any] = {"n": n, "q": q, "method": method, "replicates": len(runs)}
        for metric, target, name in (
            ("spearman", SPEARMAN_TARGET, "spearman90"),
            ("true_reliability", RELIABILITY_TARGET, "reliability80"),
        ):
            levels, table = _curves(runs, metric)
            row[f"cpe_{name}"] = crossing(levels, list(np.nanmean(table, axis=0)), target)
            row[f"cpe_{name}_p10"] = crossing(
                levels, list(np.nanpercentile(table, 10, axis=0)), target
            )
        for metric in (
            "ssr",
            "robust",
            "split_half",
            "true_reliability",
            "coverage95",
            "coverage95_eb",
            "grade_agreement",
        ):
            levels, table = _curves(runs, metric)
            if REPORT_CPE in levels:
                row[f"{metric}_at_{REPORT_CPE}"] = float(
                    np.nanmean(table[:, levels.index(REPORT_CPE)])
                )
        rows.append(row)
    for row in rows:
        for ref in ("random", "oracle"):
            base = next(
                (x for x in rows if (x["n"], x["q"], x["method"]) == (row["n"], row["q"], ref)),
                None,
            )
            for name in ("spearman90", "reliability80"):
                mine = row[f"cpe_{name}"]
                theirs = None if base is None else base[f"cpe_{name}"]
                row[f"ratio_{name}_vs_{ref}"] = (
                    mine / theirs if mine is not None and theirs else None
                )
    stop_rows = []
    for method, finals in sorted(stops.items()):
        err = np.array([f["robust"] - f["true_reliability"] for f in finals])
        ssr_err = np.array([f["ssr"] - f["true_reliability"] for f in finals])
        stop_rows.append(
            {
                "method": method,
                "replicates": len(finals),
                "stopped_on_target": float(np.mean([f["stopped_on_target"] for f in finals])),
                "cpe": float(np.mean([f["cpe"] for f in finals])),
                "true_reliability": float(np.mean([f["true_reliability"] for f in finals])),
                "robust": float(np.nanmean([f["robust"] for f in finals])),
                "robust_bias": float(np.nanmean(err)),
                "robust_sd": float(np.nanstd(err)),
                "within_005": float(np.mean(np.abs(err) <= 0.05)),
                "ssr_minus_true": float(np.mean(ssr_err)),
                "coverage95": float(np.mean([f["coverage95"] for f in finals])),
            }
        )
    return {"cells": rows, "stop_check": stop_rows}


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def markdown(summary: dict[str, Any], max_cpe: int, stop_size: int = 100) -> str:
    """The summary as markdown tables."""
    lines = [
        f"cpe to reach the target (`-`: not reached within {max_cpe} cpe). "
        "p10: the 10th-percentile replicate (90% of replicates are there). "
        f"Figures at {REPORT_CPE} cpe: SSR, split-half and robust reliability minus the "
        "true one, "
        "coverage of the reported 95% intervals and of the empirical-Bayes posterior's, "
        "exact grade agreement.",
        "",
        "| n | q | method | ρ 0.90 | ρ 0.90 p10 | rel 0.80 | rel 0.80 p10 | ρ vs random "
        "| rel vs random | ρ vs oracle | rel vs oracle | SSR−true | split−true | robust−true "
        "| coverage | EB coverage | grade agr. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["cells"]:
        tail = REPORT_CPE
        lines.append(
            "| "
            + " | ".join(
                [
                    str(r["n"]),
                    f"{r['q']:.2f}",
                    r["method"],
                    _fmt(r["cpe_spearman90"]),
                    _fmt(r["cpe_spearman90_p10"]),
                    _fmt(r["cpe_reliability80"]),
                    _fmt(r["cpe_reliability80_p10"]),
                    _fmt(r["ratio_spearman90_vs_random"], 2),
                    _fmt(r["ratio_reliability80_vs_random"], 2),
                    _fmt(r["ratio_spearman90_vs_oracle"], 2),
                    _fmt(r["ratio_reliability80_vs_oracle"], 2),
                    _fmt(_diff(r, f"ssr_at_{tail}", f"true_reliability_at_{tail}"), 3),
                    _fmt(_diff(r, f"split_half_at_{tail}", f"true_reliability_at_{tail}"), 3),
                    _fmt(_diff(r, f"robust_at_{tail}", f"true_reliability_at_{tail}"), 3),
                    _fmt(r.get(f"coverage95_at_{tail}"), 3),
                    _fmt(r.get(f"coverage95_eb_at_{tail}"), 3),
                    _fmt(r.get(f"grade_agreement_at_{tail}"), 3),
                ]
            )
            + " |"
        )
    if summary["stop_check"]:
        lines += [
            "",
            f"Stop check (n={stop_size}, q={STOP_ACCURACY:.2f}, TARGET_RELIABILITY=0.8): at the "
            "stop, the robust reliability vs the true one.",
            "",
            "| method | stopped on target | cpe | true rel. | robust | bias | SD "
            "| within 0.05 | SSR−true | coverage |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in summary["stop_check"]:
            lines.append(
                f"| {s['method']} | {s['stopped_on_target']:.2f} | {s['cpe']:.1f} "
                f"| {s['true_reliability']:.3f} | {s['robust']:.3f} | {s['robust_bias']:+.3f} "
                f"| {s['robust_sd']:.3f} | {s['within_005']:.2f} | {s['ssr_minus_true']:+.3f} "
                f"| {s['coverage95']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _diff(row: dict[str, Any], a: str, b: str) -> float | None:
    if row.get(a) is None or row.get(b) is None:
        return None
    return float(row[a] - row[b])


# --------------------------------------------------------------------------- main


def build_tasks(args: argparse.Namespace) -> list[Task]:
    """Every replicate of the grid, plus the stop check."""
    tasks = []
    checks = {} if args.check_share is None else {"check_share": args.check_share}
    for n in args.sizes:
        reps = args.replicates if n < LARGE else args.large_replicates
        accuracies = args.accuracies
        if n >= LARGE:
            accuracies = [q for q in args.accuracies if q in args.large_accuracies] or accuracies
        for q in accuracies:
            for method in args.methods:
                for r in range(reps):
                    wave = wave_size_for(n + 4)
                    if args.wave_fraction is not None:
                        wave = max(1, round(args.wave_fraction * (n + 4)))
                    if args.wave_size is not None:
                        wave = args.wave_size
                    tasks.append(Task(n, q, method, r, args.seed, args.max_cpe, wave, **checks))
    size = args.stop_size
    if args.stop_replicates > 0 and size in args.sizes and STOP_ACCURACY in args.accuracies:
        for method in (m for m in args.methods if m != "oracle"):
            for r in range(args.stop_replicates):
                tasks.append(
                    Task(
                        size,
                        STOP_ACCURACY,
                        method,
                        r,
                        args.seed,
                        args.stop_max_cpe,
                        wave_size_for(size + 4),
                        stop_check=True,
                        audit_share=args.stop_audit_share,
                        **checks,
                    )
                )
    # the slowest first, so the pool's tail is short
    return sorted(tasks, key=lambda t: -(t.n * t.max_cpe * (3 if t.stop_check else 1)))


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _methods(text: str) -> list[str]:
    names = [x for x in text.split(",") if x]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {METHODS}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_ints, default=[24, 100, 500], help="students per net")
    p.add_argument("--accuracies", type=_floats, default=[0.75, 0.80, 0.85], help="judge q")
    p.add_argument("--methods", type=_methods, default=list(METHODS), help=",".join(METHODS))
    p.add_argument("--replicates", type=int, default=6, help="replicates per cell (n < 500)")
    p.add_argument("--large-replicates", type=int, default=1, help="replicates for n >= 500")
    p.add_argument(
        "--large-accuracies",
        type=_floats,
        default=[0.80],
        help="accuracies run for n >= 500 (those also in --accuracies; else all)",
    )
    p.add_argument("--max-cpe", type=int, default=28, help="run length in cpe")
    p.add_argument(
        "--wave-fraction",
        type=float,
        default=None,
        help="waves of this share of the nodes (e.g. 0.5: one provider batch job per half "
        "coverage pass) instead of the default wave size",
    )
    p.add_argument("--wave-size", type=int, default=None, help="waves of exactly this size")
    p.add_argument("--stop-replicates", type=int, default=12, help="stop-check replicates")
    p.add_argument("--stop-size", type=int, default=100, help="stop-check n (if in --sizes)")
    p.add_argument("--stop-max-cpe", type=int, default=40, help="stop-check budget in cpe")
    p.add_argument("--stop-audit-share", type=float, default=0.1, help="AUDIT_SHARE there")
    p.add_argument(
        "--check-share",
        type=float,
        default=None,
        help="MISFIT_CHECK_SHARE of every run (default: the settings' default)",
    )
    p.add_argument("--seed", type=int, default=2024, help="seed of the latent qualities")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/efficiency.json"))
    p.add_argument("--markdown", type=Path, default=Path("benchmarks/results/efficiency.md"))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the tasks (in a process pool when ``workers > 1``) and summarise them."""
    tasks = build_tasks(args)
    started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run_task, tasks, chunksize=1))
    else:
        results = [run_task(t) for t in tasks]
    summary = summarise(results)
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "runs": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write JSON and markdown."""
    args = parse_args(argv)
    out = run(args)
    table = markdown(out["summary"], args.max_cpe, args.stop_size)
    print(table)
    print(f"{len(out['runs'])} runs in {out['seconds']:.0f} s")
    for path, text in ((args.json, json.dumps(out, indent=1)), (args.markdown, table)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
