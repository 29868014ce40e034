"""Issue 8 through the CLI: adaptive strategies with audits, the design-robust reliability
in the summary, and each statistical stopping rule ending a real batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cj_runner.core.continuation import TARGET_RELIABILITY_Z
from tests.cli.helpers import REGULAR24, execute_json, query, write_profile

BASE = {"USE_ANCHORS": False, "SEED": 3, "MAX_ITERATIONS": 200, "SCORE_STABILITY_THRESHOLD": 0}
JUDGE = {"kind": "mock", "seed": 3, "latency": {"distribution": "zero"}}


@pytest.mark.parametrize("strategy", ["infogain", "grade_boundary", "swiss", "random"])
def test_strategies_with_audits_run_end_to_end(tmp_path: Path, strategy: str) -> None:
    db = tmp_path / "cj.db"
    profile = write_profile(
        tmp_path / "p.yaml",
        {**BASE, "MATCHING_STRATEGY": strategy, "AUDIT_SHARE": 0.25},
        JUDGE,
    )
    s = execute_json(
        db, ["--inventory", str(REGULAR24), "--profile", str(profile), "--max-comparisons", "144"]
    )
    assert s["status"] == "COMPLETED" and s["stop_reason"] == "budget"
    modes = dict(query(db, "SELECT mode, COUNT(*) FROM comparisons GROUP BY mode"))
    assert modes.get("audit", 0) >= 20  # about a quarter of 144
    assert modes["coverage"] + modes["audit"] == 144
    assert 0 < s["robust_reliability"] <= 1
    assert s["robust_reliability_method"] == "posterior"
    # no pair twice in one wave, no self-pair
    waves = query(db, "SELECT wave, a_idx, b_idx FROM comparisons")
    seen: set[tuple[int, int, int]] = set()
    for wave, a, b in waves:
        assert a != b
        key = (wave, min(a, b), max(a, b))
        assert key not in seen
        seen.add(key)


@pytest.mark.parametrize(
    ("settings", "judge", "reason"),
    [
        ({"TARGET_RELIABILITY": 0.7, "AUDIT_SHARE": 0.2}, {}, "target_reliability"),
        ({"TARGET_MAX_SE": 0.9}, {}, "target_max_se"),
        ({"MAX_COST_USD": 0.05}, {"price_input_per_mtok": 1000.0}, "max_cost"),
    ],
)
def test_each_statistical_stopping_rule_ends_a_batch(
    tmp_path: Path, settings: dict[str, float], judge: dict[str, float], reason: str
) -> None:
    db = tmp_path / "cj.db"
    profile = write_profile(
        tmp_path / "p.yaml",
        {**BASE, "MIN_COMPARISONS_FOR_STABILITY_CHECK": 24, **settings},
        {**JUDGE, **judge},
    )
    s = execute_json(
        db, ["--inventory", str(REGULAR24), "--profile", str(profile), "--max-comparisons", "552"]
    )
    assert s["status"] == "COMPLETED"
    assert s["stop_reason"] == reason
    assert s["calls_sent"] < 552  # it stopped before the budget
    if reason == "max_cost":
        assert s["cost_usd"] >= 0.05
    if reason == "target_reliability":
        assert s["robust_reliability"] >= 0.6
        # what the stop checked, at the wave that stopped it: the lower bound, not the
        # estimate, reached the target
        (extra,) = query(db, "SELECT extra_json FROM batch_state")[0]
        check = json.loads(extra)["stop_check"]
        z = TARGET_RELIABILITY_Z
        assert check["z"] == z and check["target"] == 0.7
        assert check["lower_bound"] == check["robust_reliability"] - z * check["posterior_sd"]
        assert check["lower_bound"] >= 0.7 and check["posterior_sd"] > 0
        assert s["stop_detail"] == (
            f"robust reliability {check['robust_reliability']:.3f} ± "
            f"{check['posterior_sd']:.3f} at {check['comparisons']} comparisons: its lower "
            f"bound (estimate − {z:g} SD) {check['lower_bound']:.3f} reached the target 0.700"
        )
    else:
        assert s["stop_detail"] is None
