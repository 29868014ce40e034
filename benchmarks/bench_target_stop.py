"""The ``TARGET_RELIABILITY`` stop: candidate rules side by side on the same batches.

A batch that stops at the first wave where an estimate reaches a threshold stops when the
estimate is high (optional stopping), so its true reliability at the stop tends to fall
short of the target. Per size ``n``, matching strategy and replicate ``r``: the batch of
:mod:`benchmarks.bench_large_posterior` (true qualities ``N(0, 1.64^2)`` seeded by
``[r, 7]``, a judge that follows the Bradley-Terry model, ``SEED=r``, default settings,
stability off, ``--audit-share`` random audit pairs) runs wave by wave up to ``--cap``
comparisons per essay with no target; after every wave it records the design-robust
reliability and its posterior SD as the product's stop hook computes them
(:func:`cj_runner.core.workflow.robust_reliability_hook`, over the batch's comparisons),
and the true reliability (the squared correlation of the reported maximum-likelihood
scores with the centred truth, as :mod:`benchmarks.bench_large_posterior`). Each rule of
:data:`RULES` is then applied to that one trajectory: the batch stops at the first wave
(with at least ``MIN_COMPARISONS_FOR_STABILITY_CHECK`` comparisons) where the rule says
so, else at the cap. Stopping only ends a batch, it changes nothing before, so every rule
sees exactly the batch it would have run (paired by construction; the point rule's stop is
the product's before this change, checked by ``tests/services/test_bench_target_stop.py``).

Printed per cell and rule: comparisons per essay at the stop (the cost), mean true
reliability at the stop, the share of batches stopped below the target, robust - true at
the stop (mean and RMS), the share that reached the cap without stopping; then the cost
of each rule against ``point``, paired, mean ± SE.

Run: ``nice -n 10 python benchmarks/bench_target_stop.py --sizes 24,50,75,100,150
--strategies infogain,random,balanced,swiss --replicates 8``. The load average is printed
with the results.
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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cj_runner.config import Settings
from cj_runner.core import evidence
from cj_runner.core import robust as robust_module
from cj_runner.core.bt import BTFit, fit_bt
from cj_runner.core.continuation import reliability_target_met
from cj_runner.core.workflow import WaveEnd, WorkflowState, robust_reliability_hook
from cj_runner.services.harness import SimulatedJudge, run_harness

TRUE_SD = 1.64


@dataclass(frozen=True)
class Wave:
    """One wave of a trajectory: comparisons so far, the robust reliability, its
    posterior SD, and the true reliability of the scores fitted so far."""

    comparisons: int
    robust: float | None
    sd: float | None
    true: float
    low_tau: dict[float, tuple[float | None, float | None]]


Rule = Callable[[list[Wave], int, float], bool]
"""Whether a batch stops after wave ``i`` of the trajectory (``waves[: i + 1]`` known)."""


def _bound(z: float) -> Rule:
    def rule(waves: list[Wave], i: int, target: float) -> bool:
        w = waves[i]
        return reliability_target_met(w.robust, w.sd, target, z)

    return rule


def _consecutive(k: int, z: float = 0.0) -> Rule:
    def rule(waves: list[Wave], i: int, target: float) -> bool:
        if i + 1 < k:
            return False
        return all(
            reliability_target_met(w.robust, w.sd, target, z) for w in waves[i + 1 - k : i + 1]
        )

    return rule


def _margin(m: float) -> Rule:
    def rule(waves: list[Wave], i: int, target: float) -> bool:
        w = waves[i]
        return w.robust is not None and w.robust >= target + m

    return rule


def _low_tau(k: float, z: float = 0.0) -> Rule:
    def rule(waves: list[Wave], i: int, target: float) -> bool:
        value, sd = waves[i].low_tau.get(k, (None, None))
        return reliability_target_met(value, sd, target, z)

    return rule


LOW_TAU_K = (0.5, 1.0)
"""The ``tau-k`` rules' ``k``: the reliability at ``log tau - k * SE(log tau)``."""


def robust_at_low_tau(
    state: WorkflowState, ks: tuple[float, ...] = LOW_TAU_K
) -> dict[float, tuple[float | None, float | None]]:
    """The robust reliability (and its posterior SD) with ``tau`` taken ``k`` standard
    errors of ``log tau`` below the evidence's maximum, for each ``k``: how low it may be
    when ``tau``, the spread of the qualities, is uncertain."""
    first, second, won = state.comparison_arrays()
    n = state.n_nodes
    second_order = evidence.reliability_second_order(n, state.strategy)
    ev = evidence._Evidence(n, first, second, won, second_order=second_order)
    best = evidence._maximise(ev)
    se = ev.curvature_se(best)
    reported = fit_bt(n, first, second, won, prior_precision=state.prior_precision, exact_se=True)
    out: dict[float, tuple[float | None, float | None]] = {}
    for k in ks:
        log_tau = best - k * min(se, 10.0)
        eb = robust_module.EmpiricalBayesFit(
            fit=ev.fit(log_tau), prior_sd=math.exp(log_tau), log_prior_sd_se=se
        )
        detail: dict[str, float] = {}
        rng = np.random.default_rng(state.seed)
        value = robust_module._posterior(
            eb, np.asarray(reported.scores), np.arange(n), rng, 400, detail
        )
        out[k] = (value, detail.get("posterior_sd"))
    return out


RULES: dict[str, Rule] = {
    "point": _bound(0.0),
    "z=0.5": _bound(0.5),
    "z=1": _bound(1.0),
    "z=1.645": _bound(1.645),
    "z=2": _bound(2.0),
    "twice": _consecutive(2),
    "thrice": _consecutive(3),
    "margin=0.02": _margin(0.02),
    "margin=0.04": _margin(0.04),
    "tau-0.5": _low_tau(0.5),
    "tau-1": _low_tau(1.0),
    "tau-0.5+z=1": _low_tau(0.5, 1.0),
    "tau-1+z=1": _low_tau(1.0, 1.0),
}
"""Candidate stop rules: ``point`` (the rule before: the estimate reaches the target),
``z=k`` (the lower bound ``estimate - k * posterior SD`` reaches it), ``twice``/``thrice``
(the estimate reaches it on two/three consecutive waves), ``margin=m`` (the estimate
reaches ``target + m``)."""


Z_OF_RULE = {"point": 0.0, "z=0.5": 0.5, "z=1": 1.0, "z=1.645": 1.645, "z=2": 2.0}
"""The ``z`` of the lower-bound rules (the product's stop with that ``z``)."""


class _Done(Exception):
    """Every rule has stopped: the rest of the trajectory is not needed."""


def trajectory(
    n: int,
    strategy: str,
    rep: int,
    cap: int,
    audit_share: float,
    target: float,
    rules: list[str],
) -> list[Wave]:
    """One batch run wave by wave to ``cap`` comparisons per essay (or until every rule
    in ``rules`` has stopped), with the figures of :class:`Wave` after every wave."""
    settings = Settings(
        MAX_PAIRWISE_COMPARISONS=n * cap // 2,
        SCORE_STABILITY_THRESHOLD=0.0,
        MAX_ITERATIONS=1_000_000,
        SEED=rep,
        MATCHING_STRATEGY=strategy,
        AUDIT_SHARE=audit_share,
    )
    truth = np.random.default_rng([rep, 7]).standard_normal(n) * TRUE_SD
    centred = truth - truth.mean()
    hook = robust_reliability_hook()
    waves: list[Wave] = []
    latest: list[tuple[float | None, float | None]] = []
    low: list[dict[float, tuple[float | None, float | None]]] = []
    need_low = any(name.startswith("tau-") for name in rules)
    stopped = dict.fromkeys(rules, False)

    def robust_fn(state: WorkflowState, fit: BTFit) -> tuple[float | None, float | None]:
        value = hook(state, fit)
        latest.append(value)
        low.append(robust_at_low_tau(state) if need_low else {})
        return value

    def on_wave(state: WorkflowState, end: WaveEnd) -> None:
        first, second, won = state.comparison_arrays()
        robust, sd = latest[-1] if latest else (None, None)
        low_tau = low[-1] if low else {}
        latest.clear()
        low.clear()
        if first.size < 2:
            return
        reported = fit_bt(n, first, second, won, prior_precision=settings.BT_PRIOR_PRECISION)
        true = float(np.corrcoef(reported.scores, centred)[0, 1] ** 2)
        waves.append(Wave(int(first.size), robust, sd, true, low_tau))
        if first.size >= settings.MIN_COMPARISONS_FOR_STABILITY_CHECK:
            for name in rules:
                stopped[name] = stopped[name] or RULES[name](waves, len(waves) - 1, target)
        if all(stopped.values()):
            raise _Done

    with contextlib.suppress(_Done):  # every rule has stopped
        run_harness(SimulatedJudge(truth), settings, seed=rep, on_wave=on_wave, robust_fn=robust_fn)
    return waves


def stop(waves: list[Wave], rule: Rule, target: float, min_comparisons: int) -> tuple[Wave, bool]:
    """The wave a batch stops at under ``rule``, and whether it stopped on the rule
    (``False``: it ran to the cap)."""
    for i, w in enumerate(waves):
        if w.comparisons >= min_comparisons and rule(waves, i, target):
            return w, True
    return waves[-1], False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="24,50,75,100,150")
    parser.add_argument("--strategies", default="infogain,random,balanced,swiss")
    parser.add_argument("--cap", type=int, default=28, help="comparisons per essay at most")
    parser.add_argument("--replicates", type=int, default=8)
    parser.add_argument("--first-replicate", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--audit-share", type=float, default=0.0)
    parser.add_argument("--rules", default=",".join(RULES), help=f"of {', '.join(RULES)}")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    strategies = args.strategies.split(",")
    rules = args.rules.split(",")
    for name in rules:
        if name not in RULES:
            parser.error(f"unknown rule {name!r}; choose from {', '.join(RULES)}")
    min_comparisons = Settings().MIN_COMPARISONS_FOR_STABILITY_CHECK
    replicates = range(args.first_replicate, args.first_replicate + args.replicates)
    cells: dict[tuple[int, str, str], list[tuple[Wave, bool]]] = defaultdict(list)
    start_load = os.getloadavg()[0]
    for n, strategy, rep in itertools.product(sizes, strategies, replicates):
        waves = trajectory(n, strategy, rep, args.cap, args.audit_share, args.target, rules)
        parts = []
        for name in rules:
            w, on_rule = stop(waves, RULES[name], args.target, min_comparisons)
            cells[(n, strategy, name)].append((w, on_rule))
            parts.append(
                f"{name} {2 * w.comparisons / n:.1f} cpe true {w.true:.3f}"
                + ("" if on_rule else " (cap)")
            )
        print(f"n={n} {strategy} r={rep}: " + "; ".join(parts), flush=True)
    t = args.target
    print(
        f"\n| n | strategy | rule | cpe at the stop | true reliability at the stop "
        f"| stopped below {t:g} | robust − true at the stop, mean (RMS) | reached the cap "
        f"| extra cpe against point, mean ± SE |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (n, strategy, name), rows in cells.items():
        cpe = np.array([2 * w.comparisons / n for w, _ in rows])
        true = np.array([w.true for w, _ in rows])
        err = np.array([(w.robust if w.robust is not None else math.nan) - w.true for w, _ in rows])
        capped = np.mean([not on for _, on in rows])
        base = (
            np.array([2 * w.comparisons / n for w, _ in cells[(n, strategy, "point")]])
            if (
                n,
                strategy,
                "point",
            )
            in cells
            else None
        )
        extra = ""
        if base is not None and name != "point":
            d = cpe - base
            se = d.std(ddof=1) / math.sqrt(d.size) if d.size > 1 else math.nan
            extra = f"{d.mean():+.1f} ± {se:.1f}"
        print(
            f"| {n} | {strategy} | {name} | {cpe.mean():.1f} | {true.mean():.3f} "
            f"| {np.mean(true < t):.0%} | {np.nanmean(err):+.3f} "
            f"({math.sqrt(np.nanmean(np.square(err))):.3f}) | {capped:.0%} | {extra} |"
        )
    load = f"{start_load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    command = "python benchmarks/bench_target_stop.py " + " ".join(argv or sys.argv[1:])
    print(f"\n{args.replicates} replicates per cell, load average {load} (`{command.strip()}`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
