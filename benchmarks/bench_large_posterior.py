"""Large batches (issue 13): interval coverage and the spread tau from 200 nodes up.

Above 200 nodes pair selection takes ``tau`` from the evidence of
:mod:`cj_runner.core.evidence` (:func:`cj_runner.core.robust.empirical_bayes_prior_sd`,
on a doubling schedule of comparisons); the robust reliability, the ``tau`` reports show
and the Gibbs sampler's start take it from :func:`cj_runner.core.robust.empirical_bayes_fit`;
above 400 nodes the scores users see come from the Laplace mixture of
:func:`cj_runner.core.posterior.score_posterior`. Per size ``n``, matching strategy,
comparisons per essay (cpe), replicate ``r`` and rule: true qualities ``N(0, 1.64^2)``
(seeded by ``[r, 7]``), a judge that follows the Bradley-Terry model
(:class:`cj_runner.services.harness.SimulatedJudge`), the harness runs the batch
(``SEED=r``, default settings otherwise, stability off; ``--audit-share`` for random
audit pairs) to a budget of ``n cpe / 2`` comparisons (or to ``--target-reliability``);
then the posterior with the order effect and the robust reliability, as the batch
scoring computes them. Printed per run and per
cell (mean and range over replicates): the share of essays whose 95% interval covers the
centred true score; the mean squared error, r^2 and Spearman correlation of the shown
posterior means with the truth; the shown ``tau`` (``ScorePosterior.tau``: the Gibbs
sampler's posterior mean up to 400 nodes, the evidence's maximum above) and the evidence's
(``evidence_tau``, up to 400 nodes the sampler's start) against the SD of the centred
truth; the ``tau`` selection used when the batch reached 1, 2, 4 and 8 cpe ("-" where
selection uses none: ``random``, ``balanced`` and ``swiss`` select pairs without ``tau``,
only :data:`~cj_runner.core.workflow.ADAPTIVE_STRATEGIES` do; and where the batch did
not reach that cpe); the robust
reliability minus the true one (the squared correlation of the reported scores with the
truth), and with ``--variants`` that of each candidate of :data:`VARIANTS`; the
harness's CPU time per wave.

Rules (``--rules``; the same seeds for each, so the cells are paired):

* ``product``: the code as it is.
* ``before``: the evidence without the second-order term up to 400 nodes (the rule
  before it was given to the robust reliability and the sampler's start above 200).
* ``small_plain``: the robust reliability with the plain evidence up to 200 nodes (the
  rule before it got the second-order term above 50 nodes).
* ``selection``: ``product`` and selection's ``tau`` with the second-order term above
  200 nodes too (measured and not adopted: docs/decisions.md).

Run: ``nice -n 10 python benchmarks/bench_large_posterior.py --sizes 150,250,350
--cpe 10,20 --strategies infogain --replicates 8 --rules before,product,selection``;
``--sizes 500,1000 --replicates 5`` for the large-batch table; ``--sizes 24,50,100,150
--cpe 10,20 --strategies infogain,random --replicates 8 --variants plain,second_order,
gibbs_tau,gibbs,mixture,mixture_second_order`` for the reliability below 200 nodes;
``--quick`` for n = 250, two replicates. The load average is printed with the results.
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import argparse
import contextlib
import itertools
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from scipy import stats

from cj_runner.config import Settings
from cj_runner.core import evidence
from cj_runner.core import posterior as posterior_module
from cj_runner.core import robust as robust_module
from cj_runner.core.bt import fit_bt
from cj_runner.core.posterior import score_posterior
from cj_runner.core.robust import robust_reliability
from cj_runner.core.workflow import ADAPTIVE_STRATEGIES, WaveEnd, WorkflowState
from cj_runner.services.harness import SimulatedJudge, run_harness

TRUE_SD = 1.64
RULES = ("product", "before", "small_plain", "selection")
MILESTONES = (1, 2, 4, 8)
"""Comparisons per essay at which the ``tau`` selection used is reported."""


@contextlib.contextmanager
def rule(name: str) -> Iterator[None]:
    """Run the product under one of :data:`RULES` (module docstring)."""
    saved = (
        evidence.SECOND_ORDER_MIN_N,
        evidence.SELECTION_SECOND_ORDER_MIN_N,
        evidence.RELIABILITY_SECOND_ORDER_MIN_N,
    )
    if name == "before":
        evidence.SECOND_ORDER_MIN_N = evidence.DENSE_MAX_N
        evidence.SELECTION_SECOND_ORDER_MIN_N = evidence.DENSE_MAX_N
        evidence.RELIABILITY_SECOND_ORDER_MIN_N = evidence.DENSE_MAX_N
    elif name == "small_plain":
        evidence.RELIABILITY_SECOND_ORDER_MIN_N = evidence.SECOND_ORDER_MIN_N
    elif name == "selection":
        evidence.SELECTION_SECOND_ORDER_MIN_N = evidence.SECOND_ORDER_MIN_N
    elif name != "product":
        raise ValueError(f"unknown rule {name!r}; choose from {RULES}")
    try:
        yield
    finally:
        (
            evidence.SECOND_ORDER_MIN_N,
            evidence.SELECTION_SECOND_ORDER_MIN_N,
            evidence.RELIABILITY_SECOND_ORDER_MIN_N,
        ) = saved


def selection_tau(state: WorkflowState, end: WaveEnd) -> tuple[int, float] | None:
    """After a wave: the ``tau`` the product last gave selection and the number of
    comparisons it was computed from (``None`` when selection uses none: a strategy
    outside ``ADAPTIVE_STRATEGIES``, whose state may hold a posterior for other uses)."""
    if state.strategy not in ADAPTIVE_STRATEGIES:
        return None
    if state._tau is not None:  # above 200 nodes: set at the wave's planning
        return state.successes - end.successes, state._tau[1]
    if state._posterior is not None:  # up to 200 nodes
        count, fit = state._posterior
        return count, fit.prior_sd
    return None


def run(
    n: int,
    strategy: str,
    cpe: int,
    rep: int,
    rule_name: str,
    target: float | None = None,
    audit_share: float = 0.0,
    variants: list[str] | None = None,
) -> dict[str, float]:
    """One batch under one rule: the figures of the module docstring (and the robust
    reliability's error under each of ``variants``, :data:`VARIANTS`)."""
    settings = Settings(
        MAX_PAIRWISE_COMPARISONS=n * cpe // 2,
        SCORE_STABILITY_THRESHOLD=0.0,
        MAX_ITERATIONS=1_000_000,
        SEED=rep,
        MATCHING_STRATEGY=strategy,
        TARGET_RELIABILITY=target,
        AUDIT_SHARE=audit_share,
    )
    truth = np.random.default_rng([rep, 7]).standard_normal(n) * TRUE_SD
    centred = truth - truth.mean()
    taus: list[tuple[int, float]] = []

    def on_wave(state: WorkflowState, end: WaveEnd) -> None:
        used = selection_tau(state, end)
        if used is not None:
            taus.append(used)

    with rule(rule_name):
        start = time.process_time()
        result = run_harness(SimulatedJudge(truth), settings, seed=rep, on_wave=on_wave)
        harness_cpu = time.process_time() - start
        assert result.workflow is not None
        first, second, won = result.workflow.comparison_arrays()
        post = score_posterior(n, first, second, won, order_effect=True, seed=rep)
        robust = robust_reliability(
            n,
            first,
            second,
            won,
            seed=rep,
            prior_precision=settings.BT_PRIOR_PRECISION,
            strategy=settings.MATCHING_STRATEGY,
        )
    reported = fit_bt(n, first, second, won, prior_precision=settings.BT_PRIOR_PRECISION)
    true_reliability = float(np.corrcoef(reported.scores, centred)[0, 1] ** 2)
    row = {
        "coverage": float(np.mean(np.abs(post.scores - centred) <= 1.96 * post.se)),
        "mse": float(np.mean(np.square(post.scores - centred))),
        "r2": float(np.corrcoef(post.scores, centred)[0, 1] ** 2),
        "spearman": float(stats.spearmanr(post.scores, centred).statistic),
        "tau": post.tau,
        "evidence_tau": post.evidence_tau,
        "true_sd": float(centred.std()),
        "robust_error": (robust.value if robust.value is not None else np.nan) - true_reliability,
        "true_reliability": true_reliability,
        "cpe": 2.0 * first.size / n,
        "cpu_per_wave": harness_cpu / max(result.waves, 1),
    }
    if variants:
        with rule(rule_name):
            values = reliability_variants(
                n,
                first,
                second,
                won,
                post.tau,
                np.asarray(post.scores),
                None if post.covariance is None else np.asarray(post.covariance),
                settings.BT_PRIOR_PRECISION,
                rep,
                variants,
            )
        for name, value in values.items():
            row[f"v:{name}"] = value - true_reliability
    for milestone in MILESTONES:
        # the first tau computed from at least milestone * n / 2 comparisons
        used = [tau for count, tau in taus if count >= milestone * n / 2]
        row[f"tau@{milestone}"] = used[0] if used else np.nan
    return row


VARIANTS = ("plain", "second_order", "gibbs_tau", "gibbs", "mixture", "mixture_second_order")
"""Candidate robust reliabilities (``--variants``), all on the same batch: the posterior
expectation of ``corr(reported, truth)^2`` under

* ``plain``: the Laplace posterior at the plain evidence's ``tau`` (the product up to 200
  nodes);
* ``second_order``: at the ``tau`` of the evidence with its second-order term (the product
  above 200 nodes);
* ``gibbs_tau``: at the Gibbs sampler's posterior mean of ``tau``;
* ``gibbs``: the Gibbs sampler's posterior (its means and covariance), which integrates
  over ``tau``;
* ``mixture`` / ``mixture_second_order``: the Laplace posteriors mixed over ``tau`` with
  weights evidence x hyperprior (:func:`cj_runner.core.posterior.mixture_posterior`'s
  grid), plain or second-order evidence."""


def _expected_r2(
    reported: np.ndarray, components: list[tuple[float, np.ndarray, np.ndarray]], seed: int
) -> float:
    """``E corr(reported, truth)^2`` over a mixture of Gaussians ``(weight, mean, cov)``
    (400 draws in all, split by weight)."""
    rng = np.random.default_rng([seed, 0x7E1])
    x = reported - reported.mean()
    values: list[np.ndarray] = []
    total = 400
    for w, mean, cov in components:
        k = max(1, round(w * total))
        draws = mean[:, None] + robust_module._sqrt_psd(cov) @ rng.standard_normal((mean.size, k))
        draws -= draws.mean(axis=0, keepdims=True)
        r = (x @ draws) / (np.linalg.norm(x) * np.linalg.norm(draws, axis=0))
        values.append(np.square(r) * w / k)
    return float(sum(v.sum() for v in values))


def reliability_variants(
    n: int,
    first: np.ndarray,
    second: np.ndarray,
    won: np.ndarray,
    post_tau: float,
    post_scores: np.ndarray,
    post_cov: np.ndarray | None,
    prior_precision: float,
    seed: int,
    names: list[str],
) -> dict[str, float]:
    """The robust reliability under each of :data:`VARIANTS` in ``names``."""
    reported = fit_bt(n, first, second, won, prior_precision=prior_precision).scores
    reported = np.asarray(reported)
    out: dict[str, float] = {}
    for name in names:
        second_order = name.endswith("second_order")
        ev = evidence._Evidence(n, first, second, won, second_order=second_order)
        if name in ("plain", "second_order", "gibbs_tau"):
            log_tau = math.log(post_tau) if name == "gibbs_tau" else evidence._maximise(ev)
            fit = ev.fit(log_tau)
            assert fit.covariance is not None
            comps = [(1.0, np.asarray(fit.scores), np.asarray(fit.covariance))]
        elif name == "gibbs":
            if post_cov is None:
                out[name] = math.nan
                continue
            comps = [(1.0, post_scores, post_cov)]
        elif name.startswith("mixture"):
            best = evidence._maximise(ev)
            log_se = ev.curvature_se(best)
            grid = posterior_module.tau_grid(best, log_se)
            grid = np.unique(np.minimum(grid, max(evidence.upper_log_tau(ev), best)))
            weights = posterior_module.mixture_weights(
                np.array([ev(float(g)) for g in grid]), grid, posterior_module.HYPER_SCALE
            )
            comps = []
            for g, w in zip(grid, weights, strict=True):
                fit = ev.fit(float(g))
                assert fit.covariance is not None
                comps.append((float(w), np.asarray(fit.scores), np.asarray(fit.covariance)))
        else:
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
        out[name] = _expected_r2(reported, comps, seed)
    return out


def _mean_range(values: list[float], fmt: str) -> str:
    return f"{np.mean(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _tau_cell(values: list[float]) -> str:
    """The mean of the selection ``tau`` values that exist, or "-" when none does."""
    known = [v for v in values if not math.isnan(v)]
    return f"{np.mean(known):.2f}" if known else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 250, two replicates")
    parser.add_argument("--sizes", default="500,1000")
    parser.add_argument("--strategies", default="infogain,random")
    parser.add_argument("--cpe", default="10,20", help="comparisons per essay (the cap)")
    parser.add_argument("--replicates", type=int, default=5)
    parser.add_argument("--first-replicate", type=int, default=0)
    parser.add_argument("--rules", default="product", help=f"comma-separated, of {RULES}")
    parser.add_argument(
        "--target-reliability", type=float, default=None, help="stop at this robust reliability"
    )
    parser.add_argument(
        "--audit-share", type=float, default=0.0, help="share of random audit pairs"
    )
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated candidate robust reliabilities, of {VARIANTS} (n <= 400)",
    )
    args = parser.parse_args(argv)
    sizes = [250] if args.quick else [int(x) for x in args.sizes.split(",")]
    reps = 2 if args.quick else args.replicates
    strategies = args.strategies.split(",")
    cpes = [int(x) for x in args.cpe.split(",")]
    rules = args.rules.split(",")
    variants = [v for v in args.variants.split(",") if v]
    cells: dict[tuple[int, str, int, str], list[dict[str, float]]] = defaultdict(list)
    replicates = range(args.first_replicate, args.first_replicate + reps)
    for n, strategy, cpe, rep in itertools.product(sizes, strategies, cpes, replicates):
        for name in rules:
            row = run(
                n, strategy, cpe, rep, name, args.target_reliability, args.audit_share, variants
            )
            cells[(n, strategy, cpe, name)].append(row)
            taus = "/".join(_tau_cell([row[f"tau@{m}"]]) for m in MILESTONES)
            print(
                f"n={n} {strategy} cpe={cpe} r={rep} {name}: coverage {row['coverage']:.3f}, "
                f"mse {row['mse']:.3f}, r2 {row['r2']:.4f}, spearman {row['spearman']:.4f}, "
                f"tau {row['tau']:.2f} (evidence {row['evidence_tau']:.2f}; true SD "
                f"{row['true_sd']:.2f}), selection tau at "
                f"{'/'.join(map(str, MILESTONES))} cpe {taus}, robust - true "
                f"{row['robust_error']:+.3f} (true {row['true_reliability']:.3f}), "
                f"cpe {row['cpe']:.1f}, "
                f"{1000 * row['cpu_per_wave']:.1f} ms CPU per wave"
                + "".join(f", {v} {row[f'v:{v}']:+.3f}" for v in variants),
                flush=True,
            )
    print()
    print(
        "| n | strategy | cpe | rule | coverage, mean (range) | MSE | r^2 | Spearman "
        "| shown tau (sampler's up to 400 nodes), mean (range) | evidence tau "
        "| true SD | selection tau at 1/2/4/8 cpe "
        "| robust - true: mean (RMS) | true reliability | cpe run | ms CPU per wave |"
    )
    print("|" + "|".join([" ---: ", " --- ", " ---: ", " --- "] + [" ---: "] * 12) + "|")
    for (n, strategy, cpe, name), rows in cells.items():

        def col(key: str, rows: list[dict[str, float]] = rows) -> list[float]:
            return [r[key] for r in rows]

        errors = np.array(col("robust_error"))
        taus = "/".join(_tau_cell(col(f"tau@{m}")) for m in MILESTONES)
        print(
            f"| {n} | {strategy} | {cpe} | {name} | {_mean_range(col('coverage'), '.1%')} "
            f"| {np.mean(col('mse')):.3f} | {np.mean(col('r2')):.4f} "
            f"| {np.mean(col('spearman')):.4f} | {_mean_range(col('tau'), '.2f')} "
            f"| {_mean_range(col('evidence_tau'), '.2f')} "
            f"| {np.mean(col('true_sd')):.2f} | {taus} "
            f"| {np.nanmean(errors):+.3f} ({np.sqrt(np.nanmean(np.square(errors))):.3f}) "
            f"| {np.mean(col('true_reliability')):.3f} "
            f"| {np.mean(col('cpe')):.1f} | {1000 * np.mean(col('cpu_per_wave')):.1f} |"
        )
    if variants:
        print(
            "\nRobust reliability minus the true one by candidate: mean (RMS) [paired "
            f"difference of |error| against {variants[0]}, mean ± SE]"
        )
        print("| n | strategy | cpe | rule | " + " | ".join(variants) + " |")
        print(
            "|"
            + "|".join([" ---: ", " --- ", " ---: ", " --- "] + [" ---: "] * len(variants))
            + "|"
        )
        for (n, strategy, cpe, name), rows in cells.items():
            cols = []
            base_err = np.abs([r[f"v:{variants[0]}"] for r in rows])
            for v in variants:
                err = np.array([r[f"v:{v}"] for r in rows])
                cell = f"{np.nanmean(err):+.3f} ({np.sqrt(np.nanmean(np.square(err))):.3f})"
                if v != variants[0]:
                    d = np.abs(err) - base_err
                    se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else np.nan
                    cell += f" [{d.mean():+.3f} ± {se:.3f}]"
                cols.append(cell)
            print(f"| {n} | {strategy} | {cpe} | {name} | " + " | ".join(cols) + " |")
    if len(rules) > 1:
        print("\nPaired differences against the first rule, mean ± SE over replicates:")
        base = rules[0]
        for (n, strategy, cpe, name), rows in cells.items():
            if name == base:
                continue
            ref = cells[(n, strategy, cpe, base)]
            parts = []
            for key in ("coverage", "mse", "r2", "spearman", "robust_error", "cpe"):
                diff = np.array([r[key] - b[key] for r, b in zip(rows, ref, strict=True)])
                se = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else np.nan
                parts.append(f"{key} {diff.mean():+.4f} ± {se:.4f}")
            print(f"n={n} {strategy} cpe={cpe} {name} - {base}: " + ", ".join(parts))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python benchmarks/bench_large_posterior.py " + " ".join(argv or sys.argv[1:])
    print(f"\n{reps} replicates per cell, load average {load} (`{command.strip()}`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
