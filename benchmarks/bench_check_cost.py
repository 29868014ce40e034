"""What check pairs cost the ranking (``MISFIT_CHECK_SHARE``, docs/statistics.md "Check
pairs").

Per strategy, the same synthetic batches (a judge that follows the Bradley-Terry model,
right on 80% of random pairs; ``n`` essays; true scores drawn per replicate as
:func:`cj_runner.services.misfit_sim.misfit_rates` draws them) are run three ways through
the convergence harness: without check pairs (``MISFIT_CHECK_SHARE=0``) at ``--cpe``
comparisons per essay, with ``--share`` (the default ``MISFIT_CHECK_SHARE`` unless given)
at the same budget, and without check pairs with the budget cut by the same share. Each
prints the RMS error of the empirical-Bayes posterior means against the centred truth and
their Spearman correlation with it (± Monte Carlo SE over replicates), and the ratio of
the extra error from check pairs to the extra error from the cut budget.

Run: ``nice -n 10 python benchmarks/bench_check_cost.py`` (60 replicates per strategy and
way, a few minutes of CPU); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: it keeps BLAS single-threaded, as the CLI does)

# isort: split

import argparse

import numpy as np
from scipy.stats import spearmanr

from cj_runner.config import Settings
from cj_runner.core.robust import empirical_bayes_fit
from cj_runner.services.harness import SimulatedJudge, run_harness
from cj_runner.services.misfit_sim import LATENT_SD, simulation_settings


def accuracy(
    strategy: str, n: int, cpe: float, share: float, replicates: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate: RMS error of the posterior means (centred) and Spearman's rho."""
    settings = simulation_settings(n, cpe, strategy, share)
    rms, rho = [], []
    for k in range(seed, seed + replicates):
        truth = np.random.default_rng([k, 0x515]).standard_normal(n) * LATENT_SD
        result = run_harness(SimulatedJudge(truth), settings, seed=k)
        assert result.workflow is not None
        first, second, won = result.workflow.comparison_arrays()
        means = np.asarray(empirical_bayes_fit(n, first, second, won).fit.scores)
        centred = truth - truth.mean()
        rms.append(float(np.sqrt(np.mean((means - means.mean() - centred) ** 2))))
        rho.append(float(spearmanr(means, truth)[0]))
    return np.array(rms), np.array(rho)


def _pm(x: np.ndarray, digits: int = 3) -> str:
    se = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    return f"{x.mean():.{digits}f} ± {se:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", default="infogain,random")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--cpe", type=float, default=20.0)
    parser.add_argument(
        "--share",
        type=float,
        default=Settings().MISFIT_CHECK_SHARE,
        help="MISFIT_CHECK_SHARE (default: the settings' default)",
    )
    parser.add_argument("--replicates", type=int, default=60)
    parser.add_argument("--seed", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.replicates
    cut = args.cpe * (1 - args.share)
    print(
        f"Check pairs' cost at n = {args.n}, {reps} replicates (seeds {args.seed}-"
        f"{args.seed + reps - 1}): posterior means against the truth"
    )
    print(
        f"| strategy | way | RMS error | Spearman | extra RMS error: checks / {cut:g}-cpe budget |"
    )
    print("|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        base = accuracy(strategy, args.n, args.cpe, 0.0, reps, args.seed)
        checked = accuracy(strategy, args.n, args.cpe, args.share, reps, args.seed)
        fewer = accuracy(strategy, args.n, cut, 0.0, reps, args.seed)
        extra_checks = checked[0].mean() - base[0].mean()
        extra_cut = fewer[0].mean() - base[0].mean()
        ratio = f"{extra_checks / extra_cut:+.2f}" if extra_cut > 0 else "-"
        rows = (
            (f"no check pairs, {args.cpe:g} cpe", base, ""),
            (f"MISFIT_CHECK_SHARE={args.share:g}, {args.cpe:g} cpe", checked, ratio),
            (f"no check pairs, {cut:g} cpe", fewer, ""),
        )
        for way, (rms, rho), note in rows:
            print(f"| {strategy} | {way} | {_pm(rms)} | {_pm(rho, 4)} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
