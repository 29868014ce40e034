"""Large batches (issue 13): interval coverage and the spread tau above the Gibbs sampler's size.

Above :data:`cj_runner.core.evidence.DENSE_MAX_N` (400) nodes the scores users see come
from the Laplace mixture of :func:`cj_runner.core.posterior.score_posterior`, whose grid
and weights come from the evidence for ``tau``; pair selection above 200 nodes takes its
``tau`` from the same evidence. Per size ``n``, matching strategy, comparisons per essay
(cpe) and replicate ``r``: true qualities ``N(0, 1.64^2)`` (seeded by ``[r, 7]``), a judge
that follows the Bradley-Terry model (:class:`cj_runner.services.harness.SimulatedJudge`),
the harness runs the batch (``SEED=r``, default settings otherwise, stability off) to a
budget of ``n cpe / 2`` comparisons; then the posterior with the order effect, as the
batch scoring computes it. Printed per run and per cell (mean and range over replicates):
the share of essays whose 95% interval covers the centred true score, the posterior's
``tau`` (``prior_sd``) against the SD of the centred truth, and the mean squared error of
the posterior means.

Run: ``nice -n 10 python benchmarks/bench_large_posterior.py --sizes 500,1000
--replicates 5`` (about 10 minutes of CPU on a loaded two-core machine); ``--quick``
for n = 500, two replicates. The load average is printed with the results.
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import argparse
import itertools
import os
import sys
from collections import defaultdict

import numpy as np

from cj_runner.config import Settings
from cj_runner.core.posterior import score_posterior
from cj_runner.services.harness import SimulatedJudge, run_harness

TRUE_SD = 1.64


def run(n: int, strategy: str, cpe: int, rep: int) -> dict[str, float]:
    """One batch: coverage, tau, true SD and MSE of the posterior means."""
    settings = Settings(
        MAX_PAIRWISE_COMPARISONS=n * cpe // 2,
        SCORE_STABILITY_THRESHOLD=0.0,
        MAX_ITERATIONS=1_000_000,
        SEED=rep,
        MATCHING_STRATEGY=strategy,
    )
    truth = np.random.default_rng([rep, 7]).standard_normal(n) * TRUE_SD
    result = run_harness(SimulatedJudge(truth), settings, seed=rep)
    assert result.workflow is not None
    first, second, won = result.workflow.comparison_arrays()
    post = score_posterior(n, first, second, won, order_effect=True, seed=rep)
    centred = truth - truth.mean()
    return {
        "coverage": float(np.mean(np.abs(post.scores - centred) <= 1.96 * post.se)),
        "tau": post.prior_sd,
        "true_sd": float(centred.std()),
        "mse": float(np.mean(np.square(post.scores - centred))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 500, two replicates")
    parser.add_argument("--sizes", default="500,1000")
    parser.add_argument("--strategies", default="infogain,random")
    parser.add_argument("--cpe", default="10,20", help="comparisons per essay")
    parser.add_argument("--replicates", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = [500] if args.quick else [int(x) for x in args.sizes.split(",")]
    reps = 2 if args.quick else args.replicates
    strategies = args.strategies.split(",")
    cpes = [int(x) for x in args.cpe.split(",")]
    cells: dict[tuple[int, str, int], list[dict[str, float]]] = defaultdict(list)
    for n, strategy, cpe, rep in itertools.product(sizes, strategies, cpes, range(reps)):
        row = run(n, strategy, cpe, rep)
        cells[(n, strategy, cpe)].append(row)
        print(
            f"n={n} {strategy} cpe={cpe} r={rep}: coverage {row['coverage']:.3f}, "
            f"tau {row['tau']:.2f} (true SD {row['true_sd']:.2f}), mse {row['mse']:.3f}",
            flush=True,
        )
    print()
    print("| n | strategy | cpe | coverage, mean (range) | tau, mean (range) | true SD | MSE |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for (n, strategy, cpe), rows in cells.items():
        cov = [r["coverage"] for r in rows]
        tau = [r["tau"] for r in rows]
        print(
            f"| {n} | {strategy} | {cpe} | {np.mean(cov):.1%} ({min(cov):.1%}-{max(cov):.1%}) "
            f"| {np.mean(tau):.2f} ({min(tau):.2f}-{max(tau):.2f}) "
            f"| {np.mean([r['true_sd'] for r in rows]):.2f} "
            f"| {np.mean([r['mse'] for r in rows]):.3f} |"
        )
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python benchmarks/bench_large_posterior.py " + " ".join(argv or sys.argv[1:])
    print(f"\n{reps} replicates per cell, load average {load} (`{command.strip()}`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
