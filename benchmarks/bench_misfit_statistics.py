"""Which misfit statistic? The product's rule against the alternatives (issue 13 item 5).

Runs the batches of :func:`cj_runner.services.misfit_sim.misfit_rates` (a judge that
follows the Bradley-Terry model exactly, and the same judge with one planted node judged
at random; the workflow's own pair selection; the executor's final fit), keeps their
comparisons, and computes per node, from the fitted scores (or the posterior means with
``--posterior``, or the true scores with ``--true-scores``, an oracle no fit has):

* ``infit``: the standardised infit (ZSTD; flag when high), the product's statistic;
* ``lz``: the standardised log-likelihood person-fit statistic (Drasgow, Levine &
  Williams 1985), ``sum (y - p) logit(p) / sqrt(sum p (1 - p) logit(p)^2)`` from the
  node's side (flag when low);
* ``slope``: the score test of the node's discrimination, residuals against the
  (information-centred) distance to its opponents (flag when low);
* ``llr``: the log-likelihood ratio of the model against a coin for the node's
  comparisons, ``sum log(2 p_k)`` over its outcomes (flag when low; not standardised).

For each statistic it prints the false-alarm share and detection rate per cell at every
limit of a grid, and the limit that keeps every cell at or below 5% false alarms with the
best worst-cell detection. Figures in docs/statistics.md ("Misfit flag").

Run: ``nice -n 10 python benchmarks/bench_misfit_statistics.py`` (60 replicates per cell,
about 10 minutes of CPU); ``--latent-sd 0.58`` for a judge right on 65% of random pairs;
``--quick`` for a smoke run.
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.special  # noqa: E402

from cj_runner.config import Settings  # noqa: E402
from cj_runner.core.posterior import score_posterior  # noqa: E402
from cj_runner.core.reliability import MISFIT_MIN_COMPARISONS, standardized_fit  # noqa: E402
from cj_runner.services.finalize import final_fit  # noqa: E402
from cj_runner.services.harness import SimulatedJudge, run_harness  # noqa: E402
from cj_runner.services.misfit_sim import LATENT_SD, ErraticJudge, _settings  # noqa: E402

CELLS = tuple((s, n) for s in ("random", "balanced", "infogain") for n in (24, 40))
# (name, sign: +1 flags high values, -1 low ones, grid of limits)
STATISTICS: tuple[tuple[str, int, np.ndarray], ...] = (
    ("infit", 1, np.round(np.arange(0.6, 2.55, 0.1), 2)),
    ("lz", -1, np.round(-np.arange(0.6, 2.55, 0.1), 2)),
    ("slope", -1, np.round(-np.arange(0.6, 2.55, 0.1), 2)),
    ("llr", -1, np.round(np.arange(-3.0, 2.01, 0.25), 2)),
)
MAX_FALSE_ALARMS = 0.05


def node_statistics(
    n: int, a: np.ndarray, b: np.ndarray, y: np.ndarray, theta: np.ndarray, eta: float
) -> dict[str, np.ndarray]:
    """Every statistic of the module docstring per node, and the comparison counts."""
    fit = standardized_fit(n, a, b, y, theta, eta)
    p_first = scipy.special.expit(theta[a] - theta[b] + eta)
    out = {name: np.full(n, np.nan) for name in ("lz", "slope", "llr")}
    for i in range(n):
        as_a, as_b = a == i, b == i
        won = np.concatenate([y[as_a], 1.0 - y[as_b]])
        if won.size == 0:
            continue
        p = np.clip(np.concatenate([p_first[as_a], 1.0 - p_first[as_b]]), 1e-12, 1 - 1e-12)
        distance = np.concatenate([theta[i] - theta[b[as_a]], theta[i] - theta[a[as_b]]])
        w = p * (1.0 - p)
        logit = np.log(p / (1.0 - p))
        centred = distance - float(np.sum(w * distance) / np.sum(w))
        for name, x in (("lz", logit), ("slope", centred)):
            var = float(np.sum(w * x * x))
            out[name][i] = float(np.sum((won - p) * x)) / np.sqrt(var) if var > 0 else 0.0
        out["llr"][i] = float(np.sum(won * np.log(2 * p) + (1 - won) * np.log(2 * (1 - p))))
    out["infit"] = fit.infit_z
    out["count"] = fit.count.astype(float)
    return out


def statistics_of_run(
    judge: SimulatedJudge, settings: Settings, seed: int, scores: str
) -> dict[str, np.ndarray]:
    result = run_harness(judge, settings, seed=seed)
    assert result.workflow is not None
    n = len(judge.true_scores)
    first, second, won = result.workflow.comparison_arrays()
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    y = np.asarray(won, dtype=np.float64)
    if scores == "true":
        truth = np.asarray(judge.true_scores, dtype=np.float64)
        return node_statistics(n, a, b, y, truth - truth.mean(), 0.0)
    if scores == "posterior":
        post = score_posterior(n, a, b, y.astype(bool), order_effect=True, seed=seed)
        return node_statistics(n, a, b, y, np.asarray(post.scores), post.order_effect or 0.0)
    fit = final_fit(n, a, b, y.astype(bool), settings)
    return node_statistics(n, a, b, y, np.asarray(fit.scores), fit.order_effect or 0.0)


def run_cell(
    strategy: str, n: int, replicates: int, seed: int, latent_sd: float, scores: str
) -> list[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Per replicate: the erratic node, the statistics without and with it (as
    :func:`cj_runner.services.misfit_sim.misfit_rates` draws them)."""
    settings = _settings(n, 20.0, strategy)
    rows = []
    for k in range(replicates):
        rng = np.random.default_rng([seed + k, 0x515])
        truth = rng.standard_normal(n) * latent_sd
        good = statistics_of_run(SimulatedJudge(truth), settings, seed + k, scores)
        erratic = int(rng.integers(n))
        bad = statistics_of_run(ErraticJudge(truth, erratic=erratic), settings, seed + k, scores)
        rows.append((erratic, good, bad))
    return rows


def rates(rows: list[Any], name: str, sign: int, limit: float) -> tuple[float, float]:
    """Mean share of nodes flagged without an erratic node, share of runs catching it."""

    def flags(stats: dict[str, np.ndarray]) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            hit = sign * stats[name] > sign * limit
        return np.asarray(hit & (stats["count"] >= MISFIT_MIN_COMPARISONS))

    false_alarms = [float(flags(good).mean()) for _, good, _ in rows]
    caught = [bool(flags(bad)[erratic]) for erratic, _, bad in rows]
    return float(np.mean(false_alarms)), float(np.mean(caught))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-sd", type=float, default=LATENT_SD)
    parser.add_argument("--sizes", default="24,40")
    parser.add_argument("--quick", action="store_true")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--posterior", action="store_true", help="posterior means")
    group.add_argument("--true-scores", action="store_true", help="the oracle")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.replicates
    sizes = {int(x) for x in args.sizes.split(",")}
    scores = "true" if args.true_scores else "posterior" if args.posterior else "fit"
    cells = [(s, n) for s, n in CELLS if n in sizes]
    data = {cell: run_cell(*cell, reps, args.seed, args.latent_sd, scores) for cell in cells}
    head = " | ".join(f"{s} {n}" for s, n in cells)
    print(
        f"Misfit statistics at 20 cpe, {reps} replicates per cell, latent SD "
        f"{args.latent_sd}, {scores} scores: false alarms % / detection %"
    )
    for name, sign, grid in STATISTICS:
        print(f"\n{name} (flag when {'above' if sign > 0 else 'below'} the limit)")
        print(f"| limit | {head} |")
        print("|---|" + "---|" * len(cells))
        best: tuple[float, float] | None = None
        for limit in grid:
            cell_rates = [rates(data[c], name, sign, float(limit)) for c in cells]
            cells_text = " | ".join(f"{100 * fa:.1f} / {100 * det:.0f}" for fa, det in cell_rates)
            print(f"| {limit:+.2f} | {cells_text} |")
            if max(fa for fa, _ in cell_rates) <= MAX_FALSE_ALARMS:
                worst = min(det for _, det in cell_rates)
                if best is None or worst > best[1]:
                    best = (float(limit), worst)
        if best is None:
            print("no limit keeps every cell at or below 5% false alarms")
        else:
            print(f"best limit {best[0]:+.2f}: worst-cell detection {100 * best[1]:.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
