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
  comparisons, ``sum log(2 p_k)`` over its outcomes (flag when low; not standardised);
* ``cond``: the exact conditional test of the node's discrimination (a p-value; flag when
  low). Given its opponents' scores ``d_k`` and its number of wins ``r``, the outcomes of a
  node that follows the model are distributed as ``P(y | r) ~ exp(-sum_k y_k d_k)``
  whatever its own score, so conditioning on ``r`` removes the node's fitted score exactly
  (the Rasch conditional argument, Andersen 1973); ``T = sum_k y_k d_k`` (wins over strong
  opponents, losses to weak ones) is the uniformly most powerful unbiased statistic
  against a flatter slope ``expit(beta (theta - d))``, ``beta < 1``, of which a coin is
  ``beta = 0`` (Lehmann & Romano 2005, 4.4). Its tail is summed exactly by dynamic
  programming over the node's comparisons (opponent scores on a 0.02 grid);
* ``boot``: the log-likelihood ratio of the model (the node's score refitted) against a
  coin, calibrated per node by a parametric bootstrap from the fitted model (the node's
  score refitted in every draw; a p-value, flag when low).

With ``--true-scores`` the ``cond`` test is what a fit that knew every *opponent's* true
score could do (it never uses the node's own score), and ``--bound`` adds the
Neyman-Pearson bound: the power at level 5% of the most powerful test of "the node
follows the model at the level closest to a coin" against "the node is a coin", with the
erratic node's actual opponents and their true scores; no level-5% test of the node's
own comparisons can do better.

For each statistic it prints the false-alarm share and detection rate per cell at every
limit of a grid, and the limit that keeps every cell at or below 5% false alarms with the
best worst-cell detection. Figures in docs/statistics.md ("Misfit flag").

Run: ``nice -n 10 python benchmarks/bench_misfit_statistics.py`` (60 replicates per cell,
about 10 minutes of CPU); ``--latent-sd 0.58`` for a judge right on 65% of random pairs;
``--cpe 30`` for another budget; ``--check-share 0.2`` with check pairs
(``MISFIT_CHECK_SHARE``); ``--only infit`` skips the per-node tests (the product's
rule alone: its row at limit 1.50); ``--quick`` for a smoke run.
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
import scipy.optimize  # noqa: E402
import scipy.special  # noqa: E402

from cj_runner.config import Settings  # noqa: E402
from cj_runner.core.posterior import score_posterior  # noqa: E402
from cj_runner.core.reliability import MISFIT_MIN_COMPARISONS, standardized_fit  # noqa: E402
from cj_runner.services.finalize import final_fit  # noqa: E402
from cj_runner.services.harness import SimulatedJudge, run_harness  # noqa: E402
from cj_runner.services.misfit_sim import (  # noqa: E402
    LATENT_SD,
    ErraticJudge,
    simulation_settings,
)

CELLS = tuple((s, n) for s in ("random", "balanced", "infogain") for n in (24, 40))
# (name, sign: +1 flags high values, -1 low ones, grid of limits)
STATISTICS: tuple[tuple[str, int, np.ndarray], ...] = (
    ("infit", 1, np.round(np.arange(0.6, 2.55, 0.1), 2)),
    ("lz", -1, np.round(-np.arange(0.6, 2.55, 0.1), 2)),
    ("slope", -1, np.round(-np.arange(0.6, 2.55, 0.1), 2)),
    ("llr", -1, np.round(np.arange(-3.0, 2.01, 0.25), 2)),
    ("cond", -1, np.round(np.arange(0.01, 0.1001, 0.01), 2)),
    ("boot", -1, np.round(np.arange(0.01, 0.1001, 0.01), 2)),
)
MAX_FALSE_ALARMS = 0.05
GRID = 0.02  # opponent-score grid of the exact conditional test
BOOTSTRAP_DRAWS = 400
PRIOR_PRECISION = 0.01  # of the node's own refitted score (the fit's default)


def conditional_p(delta: np.ndarray, won: np.ndarray) -> float:
    """Exact ``P(T >= T_obs | r)`` under the model, ``T = sum_k won_k delta_k`` (``cond``).

    ``delta`` are the opponent scores from the node's side (``P(win) = expit(theta -
    delta_k)``); the conditional law ``P(y | r) ~ prod_k exp(-y_k delta_k)`` does not
    involve ``theta``. A node that won none or all of its comparisons gets 1."""
    r = round(float(won.sum()))
    if delta.size == 0 or r in (0, delta.size):
        return 1.0
    steps = np.round((delta - delta.min()) / GRID).astype(np.int64)
    weight = np.exp(-(delta - delta.mean()))
    top = int(np.sort(steps)[-r:].sum())
    # table[c, t]: total weight of the subsets of size c whose steps sum to t
    table = np.zeros((r + 1, top + 1))
    table[0, 0] = 1.0
    for step, w in zip(steps, weight, strict=True):
        if step == 0:
            table[1:, :] += w * table[:-1, :]
        else:
            table[1:, step:] += w * table[:-1, :-step]
        table /= table.max()
    law = table[r]
    observed = int(steps[won > 0.5].sum())
    return float(law[observed:].sum() / law.sum())


def _profile(delta: np.ndarray, won: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``won``: the node's refitted score and its log-likelihood ratio
    against a coin (Newton steps, ridge ``PRIOR_PRECISION`` as in the fit)."""
    theta = np.zeros(won.shape[0])
    wins = won.sum(axis=1)
    for _ in range(50):
        p = scipy.special.expit(theta[:, None] - delta[None, :])
        gradient = wins - p.sum(axis=1) - PRIOR_PRECISION * theta
        step = np.clip(gradient / ((p * (1 - p)).sum(axis=1) + PRIOR_PRECISION), -3, 3)
        theta += step
        if float(np.max(np.abs(step))) < 1e-9:
            break
    z = theta[:, None] - delta[None, :]
    loglik = -(won * np.logaddexp(0, -z) + (1 - won) * np.logaddexp(0, z)).sum(axis=1)
    return theta, loglik - won.shape[1] * np.log(0.5)


def bootstrap_p(delta: np.ndarray, won: np.ndarray, rng: np.random.Generator) -> float:
    """Parametric-bootstrap p-value of the node's log-likelihood ratio against a coin
    (``boot``): small when the node looks more like a coin than its refits do."""
    if delta.size == 0:
        return 1.0
    theta, observed = _profile(delta, won[None, :])
    p = scipy.special.expit(theta[0] - delta)
    draws = (rng.random((BOOTSTRAP_DRAWS, delta.size)) < p).astype(np.float64)
    _, null = _profile(delta, draws)
    return float((np.sum(null <= observed[0]) + 1) / (BOOTSTRAP_DRAWS + 1))


def neyman_pearson_bound(
    delta: np.ndarray, rng: np.random.Generator, alpha: float = MAX_FALSE_ALARMS
) -> float:
    """Power at level ``alpha`` of the most powerful test of "the node follows the model
    with the score closest to a coin (expected wins N/2)" against "the node is a coin",
    given its opponents' scores ``delta`` (Monte Carlo, 20,000 draws each way)."""
    if delta.size == 0:
        return 0.0
    half = delta.size / 2
    theta = scipy.optimize.brentq(
        lambda t: float(scipy.special.expit(t - delta).sum()) - half, -50.0, 50.0
    )
    p = scipy.special.expit(theta - delta)
    gain_win, gain_loss = np.log(0.5 / p), np.log(0.5 / (1 - p))
    null = np.where(rng.random((20_000, delta.size)) < p, gain_win, gain_loss).sum(axis=1)
    coin = np.where(rng.random((20_000, delta.size)) < 0.5, gain_win, gain_loss).sum(axis=1)
    return float(np.mean(coin > np.quantile(null, 1 - alpha)))


def node_statistics(
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    eta: float,
    rng: np.random.Generator,
    calibrated: bool = True,
) -> dict[str, np.ndarray]:
    """Every statistic of the module docstring per node, and the comparison counts
    (``cond`` and ``boot`` stay ``nan`` unless ``calibrated``)."""
    fit = standardized_fit(n, a, b, y, theta, eta)
    p_first = scipy.special.expit(theta[a] - theta[b] + eta)
    out = {name: np.full(n, np.nan) for name in ("lz", "slope", "llr", "cond", "boot")}
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
        # opponent scores from the node's side: P(node wins) = expit(theta_i - delta)
        delta = np.concatenate([theta[b[as_a]] - eta, theta[a[as_b]] + eta])
        if calibrated:
            out["cond"][i] = conditional_p(delta, won)
            out["boot"][i] = bootstrap_p(delta, won, rng)
    out["infit"] = fit.infit_z
    out["count"] = fit.count.astype(float)
    return out


def statistics_of_run(
    judge: SimulatedJudge,
    settings: Settings,
    seed: int,
    scores: str,
    bound_of: int = -1,
    calibrated: bool = True,
) -> dict[str, np.ndarray]:
    """The statistics of one batch; with ``bound_of >= 0`` also the Neyman-Pearson bound
    (``"bound"``, true opponent scores) for that node."""
    result = run_harness(judge, settings, seed=seed)
    assert result.workflow is not None
    n = len(judge.true_scores)
    first, second, won = result.workflow.comparison_arrays()
    a = np.asarray(first, dtype=np.int64)
    b = np.asarray(second, dtype=np.int64)
    y = np.asarray(won, dtype=np.float64)
    rng = np.random.default_rng([seed, 0xB007])
    truth = np.asarray(judge.true_scores, dtype=np.float64)
    if scores == "true":
        out = node_statistics(n, a, b, y, truth - truth.mean(), 0.0, rng, calibrated)
    elif scores == "posterior":
        post = score_posterior(n, a, b, y.astype(bool), order_effect=True, seed=seed)
        theta, eta = np.asarray(post.scores), post.order_effect or 0.0
        out = node_statistics(n, a, b, y, theta, eta, rng, calibrated)
    else:
        fit = final_fit(n, a, b, y.astype(bool), settings)
        theta, eta = np.asarray(fit.scores), fit.order_effect or 0.0
        out = node_statistics(n, a, b, y, theta, eta, rng, calibrated)
    if bound_of >= 0:
        delta = np.concatenate([truth[b[a == bound_of]], truth[a[b == bound_of]]])
        out["bound"] = np.array([neyman_pearson_bound(delta, rng)])
    return out


def run_cell(
    strategy: str,
    n: int,
    replicates: int,
    seed: int,
    latent_sd: float,
    scores: str,
    bound: bool = False,
    audit_share: float = 0.0,
    cpe: float = 20.0,
    calibrated: bool = True,
    check_share: float = 0.0,
) -> list[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Per replicate: the erratic node, the statistics without and with it (as
    :func:`cj_runner.services.misfit_sim.misfit_rates` draws them)."""
    settings = simulation_settings(n, cpe, strategy, check_share).model_copy(
        update={"AUDIT_SHARE": audit_share}
    )
    rows = []
    for k in range(replicates):
        rng = np.random.default_rng([seed + k, 0x515])
        truth = rng.standard_normal(n) * latent_sd
        good = statistics_of_run(
            SimulatedJudge(truth), settings, seed + k, scores, calibrated=calibrated
        )
        erratic = int(rng.integers(n))
        bad = statistics_of_run(
            ErraticJudge(truth, erratic=erratic),
            settings,
            seed + k,
            scores,
            bound_of=erratic if bound else -1,
            calibrated=calibrated,
        )
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


def monte_carlo_se(rows: list[Any], name: str, sign: int, limit: float) -> tuple[float, float]:
    """Monte Carlo standard errors of :func:`rates` (over replicates)."""
    fa, det = [], []
    for erratic, good, bad in rows:
        for stats, into in ((good, fa), (bad, det)):
            with np.errstate(invalid="ignore"):
                hit = (sign * stats[name] > sign * limit) & (
                    stats["count"] >= MISFIT_MIN_COMPARISONS
                )
            into.append(float(hit.mean()) if into is fa else float(hit[erratic]))
    m = max(len(rows), 2)
    return float(np.std(fa, ddof=1) / np.sqrt(m)), float(np.std(det, ddof=1) / np.sqrt(m))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-sd", type=float, default=LATENT_SD)
    parser.add_argument("--sizes", default="24,40")
    parser.add_argument("--strategies", default="random,balanced,infogain")
    parser.add_argument("--cpe", type=float, default=20.0, help="comparisons per essay")
    parser.add_argument(
        "--audit-share", type=float, default=0.0, help="AUDIT_SHARE: random pairs' share"
    )
    parser.add_argument(
        "--check-share", type=float, default=0.0, help="MISFIT_CHECK_SHARE: check pairs' share"
    )
    parser.add_argument("--quick", action="store_true")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--posterior", action="store_true", help="posterior means")
    group.add_argument("--true-scores", action="store_true", help="the oracle")
    parser.add_argument(
        "--bound", action="store_true", help="the Neyman-Pearson bound (true opponent scores)"
    )
    parser.add_argument("--only", default="", help="comma-separated statistics to print")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.replicates
    sizes = {int(x) for x in args.sizes.split(",")}
    scores = "true" if args.true_scores else "posterior" if args.posterior else "fit"
    strategies = set(args.strategies.split(","))
    cells = [(s, n) for s, n in CELLS if n in sizes and s in strategies]
    chosen = {x for x in args.only.split(",") if x}
    data = {
        cell: run_cell(
            *cell,
            reps,
            args.seed,
            args.latent_sd,
            scores,
            args.bound,
            args.audit_share,
            args.cpe,
            calibrated=not chosen or bool(chosen & {"cond", "boot"}),
            check_share=args.check_share,
        )
        for cell in cells
    }
    head = " | ".join(f"{s} {n}" for s, n in cells)
    print(
        f"Misfit statistics at {args.cpe:g} cpe, {reps} replicates per cell, latent SD "
        f"{args.latent_sd}, {scores} scores, AUDIT_SHARE {args.audit_share}, "
        f"MISFIT_CHECK_SHARE {args.check_share}: "
        "false alarms % / detection %"
    )
    if args.bound:
        bounds = [np.mean([bad["bound"][0] for _, _, bad in data[c]]) for c in cells]
        print("\nNeyman-Pearson bound on detection at 5% (true opponent scores)")
        print(f"| {head} |\n|" + "---|" * len(cells))
        print("| " + " | ".join(f"{100 * x:.0f}" for x in bounds) + " |")
    for name, sign, grid in STATISTICS:
        if chosen and name not in chosen:
            continue
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
            ses = [monte_carlo_se(data[c], name, sign, best[0]) for c in cells]
            print(
                "Monte Carlo SE at that limit (false alarms / detection, points): "
                + " | ".join(f"{100 * f:.1f} / {100 * d:.0f}" for f, d in ses)
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
