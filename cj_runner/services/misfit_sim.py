"""Misfit flags in simulation: how often a well-behaved node is flagged, how often an
erratic one is caught.

A synthetic batch runs through the convergence harness (the workflow's own pair selection)
with a judge that follows the Bradley-Terry model exactly; in a second set of runs one
planted node is judged at random (every comparison it takes part in is a coin toss). The
final fit is the executor's (:func:`cj_runner.services.finalize.final_fit`), and nodes are
flagged by :func:`cj_runner.core.reliability.flag_standardized_misfits`.

``benchmarks/bench_calibration.py`` prints these figures; ``tests/services`` checks them on a
few seeded replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cj_runner.config import Settings
from cj_runner.core.reliability import (
    MISFIT_MIN_COMPARISONS,
    MISFIT_Z_THRESHOLD,
    flag_standardized_misfits,
    standardized_fit,
)
from cj_runner.services.finalize import final_fit
from cj_runner.services.harness import SimulatedJudge, run_harness

LATENT_SD = 1.64
"""SD of the true scores: a noise-1 judge is then right on 80% of random pairs
(``harness.latent_sd_for_accuracy(0.8)``), the accuracy ``bench_efficiency`` uses."""

__all__ = [
    "LATENT_SD",
    "ErraticJudge",
    "MisfitRates",
    "misfit_flags_of_run",
    "misfit_rates",
    "simulation_settings",
]


@dataclass(frozen=True)
class ErraticJudge(SimulatedJudge):
    """A Bradley-Terry judge, except that comparisons with node ``erratic`` are coin tosses."""

    erratic: int = -1

    def p_a_wins(self, a: int, b: int) -> float:
        if self.erratic in (a, b):
            return 0.5
        return super().p_a_wins(a, b)


@dataclass(frozen=True)
class MisfitRates:
    """False-alarm and detection rates of the misfit flags over simulated batches.

    ``false_alarm_rate``: mean share of nodes flagged when the judge follows the model
    exactly (every node well-behaved). ``detection_rate``: share of runs in which the
    planted erratic node was flagged. ``erratic_false_alarm_rate``: mean share of the
    other nodes flagged in those runs.
    """

    n: int
    cpe: float
    strategy: str
    replicates: int
    threshold: float
    min_comparisons: int
    check_share: float
    false_alarm_rate: float
    detection_rate: float
    erratic_false_alarm_rate: float


def simulation_settings(
    n: int, cpe: float, strategy: str | None = None, check_share: float | None = None
) -> Settings:
    """Settings of a simulated batch of ``n`` nodes that spends its whole budget of
    ``n * cpe / 2`` calls (stability and resampling caps out of the way); ``strategy`` and
    ``check_share`` None keep the defaults of ``MATCHING_STRATEGY`` and
    ``MISFIT_CHECK_SHARE``. Shared by the misfit and panel simulations."""
    budget = max(round(n * cpe / 2), 1)
    fields: dict[str, object] = {
        "MAX_PAIRWISE_COMPARISONS": budget,
        "COMPARISONS_PER_STABILITY_CHECK_ITERATION": max(n // 2, 1),
        "MIN_COMPARISONS_FOR_STABILITY_CHECK": budget,
        "SCORE_STABILITY_THRESHOLD": 0.0,
        "MAX_ITERATIONS": 10_000,
        "MAX_RESAMPLING_PASSES_FOR_SMALL_NET": 100,
        "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH": 100,
    }
    if strategy is not None:
        fields["MATCHING_STRATEGY"] = strategy
    if check_share is not None:
        fields["MISFIT_CHECK_SHARE"] = check_share
    return Settings.model_validate(fields)


def misfit_flags_of_run(
    judge: SimulatedJudge,
    settings: Settings,
    *,
    seed: int,
    threshold: float = MISFIT_Z_THRESHOLD,
    min_comparisons: int = MISFIT_MIN_COMPARISONS,
) -> np.ndarray:
    """Run one synthetic batch and return which nodes the final fit flags as misfitting."""
    result = run_harness(judge, settings, seed=seed)
    assert result.workflow is not None
    n = len(judge.true_scores)
    first, second, first_won = result.workflow.comparison_arrays()
    fit = final_fit(n, first, second, first_won, settings)
    stats = standardized_fit(
        n,
        np.asarray(first, dtype=np.int64),
        np.asarray(second, dtype=np.int64),
        np.asarray(first_won, dtype=bool),
        fit.scores,
        fit.order_effect or 0.0,
    )
    return flag_standardized_misfits(stats.infit_z, stats.count, threshold, min_comparisons)


def misfit_rates(
    *,
    n: int = 40,
    cpe: float = 20.0,
    strategy: str = "random",
    replicates: int = 20,
    seed: int = 0,
    latent_sd: float = LATENT_SD,
    threshold: float = MISFIT_Z_THRESHOLD,
    min_comparisons: int = MISFIT_MIN_COMPARISONS,
    check_share: float | None = None,
) -> MisfitRates:
    """False-alarm and detection rates of the misfit flags (pure: seeded, no I/O).

    Args:
        n: nodes per batch.
        cpe: comparisons per essay (the budget is ``n * cpe / 2`` calls, all spent).
        strategy: the matching strategy (``MATCHING_STRATEGY``).
        replicates: batches per condition (well-behaved, and with one erratic node).
        seed: seed of the first replicate.
        latent_sd: SD of the true scores (logits) drawn per replicate.
        threshold: the ZSTD limit.
        min_comparisons: fewest comparisons for a flag.
        check_share: ``MISFIT_CHECK_SHARE`` (the share of calls on check pairs; None: the
            default).
    """
    settings = simulation_settings(n, cpe, strategy, check_share)
    false_alarms: list[float] = []
    caught: list[bool] = []
    others: list[float] = []
    for k in range(replicates):
        rng = np.random.default_rng([seed + k, 0x515])
        truth = rng.standard_normal(n) * latent_sd
        flags = misfit_flags_of_run(
            SimulatedJudge(truth),
            settings,
            seed=seed + k,
            threshold=threshold,
            min_comparisons=min_comparisons,
        )
        false_alarms.append(float(flags.mean()))
        erratic = int(rng.integers(n))
        flags = misfit_flags_of_run(
            ErraticJudge(truth, erratic=erratic),
            settings,
            seed=seed + k,
            threshold=threshold,
            min_comparisons=min_comparisons,
        )
        caught.append(bool(flags[erratic]))
        others.append(float(np.delete(flags, erratic).mean()))
    return MisfitRates(
        n=n,
        cpe=cpe,
        strategy=strategy,
        replicates=replicates,
        threshold=threshold,
        min_comparisons=min_comparisons,
        check_share=settings.MISFIT_CHECK_SHARE,
        false_alarm_rate=float(np.mean(false_alarms)),
        detection_rate=float(np.mean(caught)),
        erratic_false_alarm_rate=float(np.mean(others)),
    )
