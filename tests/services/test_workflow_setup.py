"""One constructor for the workflow (services/workflow_setup.py): every setting reaches the
executor, the dry run, the harness and the panel simulation alike.

Before it, the four built ``WorkflowState`` each in their own way: the harness counted
anchors as students for the small-net rule, and the panel simulation ignored
``AUDIT_SHARE`` and ``TARGET_RELIABILITY``. The tests below fail on that code."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cj_runner.config import Settings, continuation_limits
from cj_runner.core.models import GradeScale, Mode
from cj_runner.core.workflow import WorkflowState
from cj_runner.judges.config import judge_config_from_mapping
from cj_runner.services import panel_sim
from cj_runner.services.harness import SimulatedJudge, run_harness
from cj_runner.services.panel_sim import MOCK_PANEL, simulate_panel
from cj_runner.services.workflow_setup import batch_workflow, workflow_from_settings
from cj_runner.storage import repository as repo

PACKAGE = Path(__file__).resolve().parents[2] / "cj_runner"

# every setting the workflow reads, away from its default
EVERY_SETTING: dict[str, Any] = {
    "MAX_PAIRWISE_COMPARISONS": 321,
    "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 7,
    "MATCHING_STRATEGY": "grade_boundary",
    "BT_PRIOR_PRECISION": 0.05,
    "MIN_RESAMPLING_NET_SIZE": 4,
    "AUDIT_SHARE": 0.2,
    "ANCHOR_WEIGHT": 2.5,
    "FIT_ORDER_EFFECT": False,
    "TARGET_RELIABILITY": 0.7,
    "PANEL_DOUBLE_SHARE": 0.3,
    "SCORE_STABILITY_THRESHOLD": 0.0,
}


def _node(anchor: bool = False, grade: str | None = None) -> repo.NewNode:
    return repo.NewNode("e", anchor, "c", "t", known_grade=grade)


def _assert_reads_settings(wf: WorkflowState, settings: Settings) -> None:
    assert wf.limits == continuation_limits(settings)
    assert wf.wave_size == 7
    assert wf.strategy == "grade_boundary"
    assert wf.prior_precision == 0.05
    assert wf.min_resampling_net_size == 4
    assert wf.audit_share == 0.2
    assert wf.anchor_weight == 2.5
    assert wf.order_effect is False
    assert wf.robust_reliability_fn is not None


def test_a_batch_workflow_gets_every_setting_its_anchors_and_its_panel() -> None:
    settings = Settings(**EVERY_SETTING)
    scale = GradeScale("s", ("C", "B", "A"))
    nodes = [_node(), _node(), _node(True, "A"), _node(), _node(True, "C"), _node(True)]
    panel = judge_config_from_mapping(
        {
            "kind": "mock",
            "name": "p",
            "panel": [{"judge": {"kind": "mock", "name": n}} for n in ("x", "y")],
        },
        "test",
    )
    wf = batch_workflow(settings, nodes, seed=5, total_budget=99, grade_scale=scale, judge=panel)
    _assert_reads_settings(wf, settings)
    assert (wf.n_nodes, wf.n_students, wf.total_budget, wf.seed) == (6, 3, 99, 5)
    assert dict(wf.anchor_grades) == {2: 2, 4: 0}  # the ungraded anchor has no grade
    assert wf.n_grades == 3
    assert (wf.n_judges, wf.double_share) == (2, 0.3)
    assert wf.mode is Mode.COVERAGE and wf.waves_completed == 0
    one = batch_workflow(settings, nodes, seed=5, total_budget=99)
    assert (one.n_judges, one.double_share, dict(one.anchor_grades)) == (1, 0.0, {})
    assert one.n_students == 3  # anchors are no students, graded or not


def test_a_resumed_batch_starts_from_its_stored_state() -> None:
    stored = {
        "current_mode": "resampling",
        "iteration": 4,
        "resampling_pass_count": 2,
        "pass_remaining": [[0, 1], [2, 3]],
    }
    wf = batch_workflow(Settings(), [_node()] * 4, seed=1, total_budget=40, stored=stored)
    assert wf.mode is Mode.RESAMPLING
    assert (wf.waves_completed, wf.pass_count) == (4, 2)
    assert wf.pass_remaining == {(0, 1), (2, 3)}


def test_the_harness_reads_every_setting_and_counts_anchors_out_of_the_small_net() -> None:
    settings = Settings(**EVERY_SETTING)
    anchors = {10: 0, 11: 1, 12: 2}
    truth = np.random.default_rng(1).normal(0, 1.6, 13)
    res = run_harness(
        SimulatedJudge(truth),
        settings,
        total_budget=30,
        seed=2,
        anchor_grades=anchors,
        n_grades=3,
    )
    wf = res.workflow
    assert wf is not None
    # as a real batch of 10 students and 3 anchors (the executor's batch_workflow)
    real = batch_workflow(
        settings,
        [_node()] * 10 + [_node(True, g) for g in "CBA"],
        seed=2,
        total_budget=30,
        grade_scale=GradeScale("s", ("C", "B", "A")),
    )
    assert wf.n_students == real.n_students == 10
    assert wf.is_small_net == real.is_small_net
    assert dict(wf.anchor_grades) == dict(real.anchor_grades)
    _assert_reads_settings(wf, settings)


def _captured_panel_workflow(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, n: int = 30
) -> tuple[WorkflowState, panel_sim.PanelRun]:
    built: list[WorkflowState] = []

    def spy(*args: Any, **kwargs: Any) -> WorkflowState:
        wf = workflow_from_settings(*args, **kwargs)
        built.append(wf)
        return wf

    monkeypatch.setattr(panel_sim, "workflow_from_settings", spy)
    truth = np.random.default_rng(4).standard_normal(n) * 1.6
    run = simulate_panel(MOCK_PANEL, truth, settings, seed=4)
    assert len(built) == 1
    return built[0], run


def test_the_panel_simulation_asks_audit_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        MAX_PAIRWISE_COMPARISONS=300,
        COMPARISONS_PER_STABILITY_CHECK_ITERATION=15,
        SCORE_STABILITY_THRESHOLD=0.0,
        AUDIT_SHARE=0.3,
    )
    wf, run = _captured_panel_workflow(monkeypatch, settings)
    audits = wf.modes.count(Mode.AUDIT.value)
    assert 0.15 * len(wf.modes) <= audits <= 0.4 * len(wf.modes)
    assert len(run.data.judge) == len(wf.modes)


def test_the_panel_simulation_stops_at_the_target_reliability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base: dict[str, Any] = {
        "MAX_PAIRWISE_COMPARISONS": 600,
        "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 15,
        "MIN_COMPARISONS_FOR_STABILITY_CHECK": 60,
        "SCORE_STABILITY_THRESHOLD": 0.0,
        "MAX_ITERATIONS": 10_000,
        "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH": 100,
    }
    _, everything = _captured_panel_workflow(monkeypatch, Settings(**base))
    assert len(everything.data.judge) == 600
    wf, run = _captured_panel_workflow(monkeypatch, Settings(**base, TARGET_RELIABILITY=0.6))
    assert wf.robust_reliability_fn is not None
    assert 60 <= len(run.data.judge) < 600


def test_services_build_the_workflow_only_through_workflow_setup() -> None:
    """No module outside core/ and workflow_setup.py calls ``WorkflowState(...)``: a
    setting added to the constructor reaches every caller."""
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("core/") or rel == "services/workflow_setup.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "WorkflowState":
                callers.append(f"{rel}:{node.lineno}")
    assert callers == []
