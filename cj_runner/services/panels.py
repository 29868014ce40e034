"""The judges of a batch on one scale: gather its comparisons (the judges cj-runner asked
and the imported ones) and build the judges report (``cj-report judges``, the HTML
report's judges section).

Every successful comparison counts once, with its judge: the batch's judge, or in a panel
batch the member that answered (stored with the comparison; for one stored without it,
recomputed by :func:`cj_runner.judges.panel.member_of`, the choice the panel judge made);
every imported judgment with the judge id of its file. A pair asked of two judges on
purpose is two comparisons, one per judge. The
analysis is :mod:`cj_runner.core.panel`'s: one Bradley-Terry scale with an order effect
per judge, held-out misfit flags, agreement with the consensus, Cohen's kappa on shared
edges, and the reliability with the flagged judges excluded or down-weighted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cj_runner.core.panel import (
    JUDGE_MISFIT_MIN_COMPARISONS,
    JUDGE_MISFIT_Z_THRESHOLD,
    KAPPA_MIN_SHARED_EDGES,
    PANEL_MAX_NODES,
    PanelComparisons,
    consensus_agreement,
    fit_panel,
    judge_misfit,
    misfit_weights,
    pairwise_kappa,
    position_bias_pp,
    reliability_without,
)
from cj_runner.core.robust import robust_reliability
from cj_runner.judges.panel import member_of
from cj_runner.services.batches import stored_judge_config
from cj_runner.services.summary import is_provisional
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.imports import load_imported

MISFIT_ACTIONS: tuple[str, ...] = ("exclude", "downweight", "keep")

SOURCE_BATCH = "batch"
SOURCE_IMPORTED = "imported"


@dataclass(frozen=True)
class PanelInputs:
    """A batch's comparisons with their judges, ready for :mod:`cj_runner.core.panel`."""

    batch: repo.BatchRecord
    nodes: list[repo.NodeRecord]
    judges: tuple[str, ...]
    sources: tuple[str, ...]
    data: PanelComparisons | None  # None: no comparison at all
    #: pairs of a wave answered by two judges (a panel's second asks), by the two judges
    asked_of_both: dict[frozenset[str], int] = field(default_factory=dict)


async def panel_inputs(store: Store, batch_ref: str) -> PanelInputs:
    """Load a batch's successful comparisons and imported judgments with their judges."""
    batch = await repo.find_batch(store, batch_ref)
    nodes = await repo.load_nodes(store, batch.id)
    attempts = await repo.load_attempts(store, batch.id)
    imported = await load_imported(store, batch.id)
    return panel_inputs_of(batch, nodes, attempts, imported)


def panel_inputs_of(
    batch: repo.BatchRecord,
    nodes: list[repo.NodeRecord],
    attempts: Sequence[dict[str, Any]],
    imported: Sequence[dict[str, Any]],
) -> PanelInputs:
    """:func:`panel_inputs` from rows already loaded (the HTML report has them)."""
    config = stored_judge_config(batch)
    # a panel's judges in the profile's order (one that never answered shows with 0)
    judges: dict[str, str] = {m.judge.name: SOURCE_BATCH for m in config.panel}
    rows: list[tuple[str, int, int, bool]] = []
    by_wave_edge: dict[tuple[int, int, int], set[str]] = {}
    for r in attempts:
        if r["status"] == "success":
            name = (
                r.get("judge")
                or member_of(
                    config,
                    nodes[r["a_idx"]].checksum,
                    nodes[r["b_idx"]].checksum,
                    int(r["repeat_index"] or 0),
                )
                if config.panel
                else batch.judge_name
            )
            judges.setdefault(name, SOURCE_BATCH)
            rows.append((name, r["a_idx"], r["b_idx"], r["winner"] == "A"))
            a, b = int(r["a_idx"]), int(r["b_idx"])
            by_wave_edge.setdefault((int(r["wave"]), min(a, b), max(a, b)), set()).add(name)
    for r in imported:
        judges.setdefault(r["judge"], SOURCE_IMPORTED)
        rows.append((r["judge"], r["a_idx"], r["b_idx"], r["winner"] == "A"))
    names = tuple(judges)
    data = None
    if rows:
        index = {name: k for k, name in enumerate(names)}
        data = PanelComparisons.of(
            len(nodes),
            len(names),
            np.array([index[r[0]] for r in rows], dtype=np.intp),
            np.array([r[1] for r in rows], dtype=np.intp),
            np.array([r[2] for r in rows], dtype=np.intp),
            np.array([r[3] for r in rows], dtype=bool),
        )
    both = Counter(frozenset(s) for s in by_wave_edge.values() if len(s) == 2)
    return PanelInputs(batch, nodes, names, tuple(judges[n] for n in names), data, dict(both))


def _num(value: float | np.floating[Any] | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def judges_report(inputs: PanelInputs, *, action: str = "exclude") -> dict[str, Any]:
    """The judges report as a JSON-ready dict (docs/panels.md describes every key).

    Args:
        inputs: :func:`panel_inputs`.
        action: what the reliability comparison does with flagged judges (``exclude``,
            ``downweight`` or ``keep``).

    Raises:
        ValueError: an unknown action.
    """
    if action not in MISFIT_ACTIONS:
        raise ValueError(f"unknown misfit action {action!r}")
    batch, data = inputs.batch, inputs.data
    extra = dict(batch.state.get("extra_json") or {})
    report: dict[str, Any] = {
        "batch_id": batch.id,
        "batch_name": batch.name,
        "status": batch.status,
        "stop_reason": batch.stop_reason,
        "provisional": is_provisional(batch.status, inputs.nodes),
        "judge_health": extra.get("judge_health"),
        "judges": [],
        "kappa": [],
        "reliability": None,
        "scores": [],
        "model": (
            "one Bradley-Terry scale for every judge with a position-A effect per judge "
            "(weak ridge, as the MLE); misfit: held-out infit ZSTD"
        ),
        "thresholds": {
            "misfit_z": JUDGE_MISFIT_Z_THRESHOLD,
            "misfit_min_comparisons": JUDGE_MISFIT_MIN_COMPARISONS,
            "kappa_min_shared_edges": KAPPA_MIN_SHARED_EDGES,
            "flagging_needs_judges": 3,
        },
        "notes": [],
    }
    if data is None:
        report["notes"].append("no comparisons yet")
        return report
    if data.n_items > PANEL_MAX_NODES:
        report["notes"].append(
            f"the common scale is fitted for at most {PANEL_MAX_NODES} essays; this batch "
            f"has {data.n_items}"
        )
        return report
    fit = fit_panel(data)
    misfit = judge_misfit(data)
    agreement = consensus_agreement(data, fit.scores)
    counts = np.bincount(data.judge, minlength=data.n_judges)
    for k, name in enumerate(inputs.judges):
        bias = position_bias_pp(data, fit, k)
        report["judges"].append(
            {
                "judge": name,
                "source": inputs.sources[k],
                "comparisons": int(counts[k]),
                "order_effect": _num(fit.order_effects[k]),
                "order_effect_se": _num(fit.order_effect_se[k]),
                "position_bias": _num(bias.shift if bias else None),
                "position_bias_low": _num(bias.low if bias else None),
                "position_bias_high": _num(bias.high if bias else None),
                "infit": _num(misfit.stats.infit[k]),
                "outfit": _num(misfit.stats.outfit[k]),
                "infit_z": _num(misfit.stats.infit_z[k], 2),
                "outfit_z": _num(misfit.stats.outfit_z[k], 2),
                "flagged": bool(misfit.flagged[k]),
                "agreement": _num(agreement[k].share),
                "agreement_low": _num(agreement[k].low),
                "agreement_high": _num(agreement[k].high),
            }
        )
    for kappa in pairwise_kappa(data):
        report["kappa"].append(
            {
                "judge_a": inputs.judges[kappa.judge_a],
                "judge_b": inputs.judges[kappa.judge_b],
                "shared_edges": kappa.shared_edges,
                "asked_of_both": inputs.asked_of_both.get(
                    frozenset((inputs.judges[kappa.judge_a], inputs.judges[kappa.judge_b])), 0
                ),
                "agreement": _num(kappa.agreement),
                "kappa": _num(kappa.kappa),
            }
        )
    students = [n.idx for n in inputs.nodes if not n.is_anchor]
    weights = misfit_weights(misfit.stats, misfit.flagged, action)
    change = reliability_without(data, weights, students=students, fit_all=fit)
    flagged = [inputs.judges[k] for k in misfit.order]
    report["reliability"] = {
        "action": action,
        "flagged": flagged,
        "judge_weights": {n: _num(weights[k]) for k, n in enumerate(inputs.judges)},
        "ssr_all": _num(change.ssr_all),
        "ssr_after": _num(change.ssr_after),
        "robust_all": _robust(data, students, np.ones(data.n_judges), batch.seed),
        "robust_after": (
            _robust(data, students, weights, batch.seed)
            if action == "exclude" and misfit.flagged.any()
            else None
        ),
    }
    report["scores"] = [
        {
            "essay_id": node.essay_id,
            "is_anchor": node.is_anchor,
            "score": _num(fit.scores[node.idx]),
            "se": _num(fit.se[node.idx]),
            "comparisons": int(np.sum(data.first == node.idx) + np.sum(data.second == node.idx)),
        }
        for node in inputs.nodes
    ]
    if data.n_judges < 3:
        report["notes"].append(
            "misfit is flagged only against two or more other judges; with "
            f"{data.n_judges} judge(s) the figures are shown, nothing is flagged"
        )
    return report


def judges_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The CSV rows of the judges report: one per judge, ending with the batch flags
    (``provisional``, ``judge_signal``) as every CSV export does."""
    health = report.get("judge_health") or {}
    flags = {"provisional": bool(report["provisional"]), "judge_signal": health.get("signal")}
    return [{**{c: j.get(c) for c in JUDGE_COLUMNS}, **flags} for j in report["judges"]]


JUDGE_COLUMNS: tuple[str, ...] = (
    "judge",
    "source",
    "comparisons",
    "order_effect",
    "order_effect_se",
    "position_bias",
    "position_bias_low",
    "position_bias_high",
    "infit",
    "outfit",
    "infit_z",
    "outfit_z",
    "flagged",
    "agreement",
    "agreement_low",
    "agreement_high",
)
JUDGE_CSV_COLUMNS: tuple[str, ...] = (*JUDGE_COLUMNS, "provisional", "judge_signal")


def _robust(
    data: PanelComparisons, students: Sequence[int], judge_weights: np.ndarray, seed: int
) -> float | None:
    """Design-robust reliability over the students of the comparisons of judges with a
    positive weight (``None`` when it cannot be computed)."""
    keep = judge_weights[data.judge] > 0
    if keep.sum() < 2 or len(students) < 2:
        return None
    result = robust_reliability(
        data.n_items,
        data.first[keep],
        data.second[keep],
        data.first_won[keep] >= 0.5,
        seed=seed,
        nodes=list(students),
    )
    return _num(result.value)
