"""The one place a :class:`~cj_runner.core.workflow.WorkflowState` is built from settings.

The executor (new and resumed batches), the dry run, the simulation harness and the panel
simulation all build their workflow here, so a setting that reaches one reaches all of
them. What differs between them is an explicit argument: the stored state of a resumed
batch, the panel's judges and double share, the harness's fixed selection scores.

* :func:`workflow_from_settings`: the settings plus the net's shape (nodes, students,
  anchors); the simulations call it.
* :func:`batch_workflow`: a real batch's nodes, grade scale and judge (or panel), and
  for a batch that already ran its state as stored after the last closed wave; the
  executor, the dry run and the benchmarks that rebuild a stored batch call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from cj_runner.config import Settings, continuation_limits
from cj_runner.core.models import GradeScale, Mode
from cj_runner.core.workflow import (
    RobustReliabilityFn,
    WorkflowState,
    robust_reliability_hook,
)
from cj_runner.judges.config import JudgeConfig, panel_double_share

__all__ = ["batch_workflow", "panel_shape", "workflow_from_settings"]


class _Node(Protocol):
    """What the workflow needs of a node (a stored or a new one)."""

    @property
    def is_anchor(self) -> bool: ...

    @property
    def known_grade(self) -> str | None: ...


def workflow_from_settings(
    settings: Settings,
    *,
    n_nodes: int,
    seed: int,
    total_budget: int | None = None,
    anchor_grades: Mapping[int, int] | None = None,
    n_grades: int = 0,
    students: Sequence[int] | None = None,
    n_students: int | None = None,
    n_judges: int = 1,
    double_share: float = 0.0,
    robust_fn: RobustReliabilityFn | None = None,
    selection_scores: np.ndarray | None = None,
    stored: Mapping[str, Any] | None = None,
) -> WorkflowState:
    """A workflow for ``n_nodes`` nodes under ``settings``.

    Args:
        settings: the CJ settings (every workflow setting is read here, nowhere else).
        n_nodes: nodes in the batch (students and anchors).
        seed: the batch seed (selection).
        total_budget: the call budget (default ``MAX_PAIRWISE_COMPARISONS``).
        anchor_grades: anchor node -> grade index (for ``grade_boundary``); every other
            node is a student.
        n_grades: grades on the scale.
        students: the student nodes, over which the robust reliability is taken
            (default: the nodes not in ``anchor_grades``).
        n_students: students for the small-net rule (default: ``len(students)``).
        n_judges: judges of a panel (1: one judge).
        double_share: the share of each wave's pairs also asked of a second judge
            (:func:`panel_shape` for a batch's panel).
        robust_fn: the robust-reliability hook; by default, when ``TARGET_RELIABILITY``
            is set, :func:`robust_reliability_hook` over the students.
        selection_scores: pair on these fixed scores instead of the fit (the harness's
            oracle); ``None`` in real batches.
        stored: a batch's state as stored after its last closed wave (``current_mode``,
            ``iteration``, ``resampling_pass_count``, ``pass_remaining``; a resumed batch).
    """
    anchors = dict(anchor_grades or {})
    if students is None:
        students = [i for i in range(n_nodes) if i not in anchors]
    if robust_fn is None and settings.TARGET_RELIABILITY is not None:
        robust_fn = robust_reliability_hook(students)
    state = stored or {}
    return WorkflowState(
        n_nodes=n_nodes,
        n_students=len(students) if n_students is None else n_students,
        total_budget=(
            settings.MAX_PAIRWISE_COMPARISONS if total_budget is None else int(total_budget)
        ),
        limits=continuation_limits(settings),
        wave_size=settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION,
        strategy=settings.MATCHING_STRATEGY,
        seed=seed,
        prior_precision=settings.BT_PRIOR_PRECISION,
        min_resampling_net_size=settings.MIN_RESAMPLING_NET_SIZE,
        mode=Mode(state.get("current_mode") or Mode.COVERAGE.value),
        waves_completed=int(state.get("iteration") or 0),
        pass_count=int(state.get("resampling_pass_count") or 0),
        pass_remaining={(int(p[0]), int(p[1])) for p in state.get("pass_remaining") or []},
        audit_share=settings.AUDIT_SHARE,
        check_share=settings.MISFIT_CHECK_SHARE,
        anchor_weight=settings.ANCHOR_WEIGHT,
        n_judges=n_judges,
        double_share=double_share,
        order_effect=settings.FIT_ORDER_EFFECT,
        anchor_grades=anchors,
        n_grades=n_grades,
        robust_reliability_fn=robust_fn,
        selection_scores=selection_scores,
    )


def panel_shape(judge: JudgeConfig | None, settings: Settings) -> tuple[int, float]:
    """A batch's judges and double share: ``(1, 0.0)`` for one judge; for a panel its
    members and :func:`~cj_runner.judges.config.panel_double_share`."""
    if judge is None or not judge.panel:
        return 1, 0.0
    return len(judge.panel), panel_double_share(judge, settings.PANEL_DOUBLE_SHARE)


def batch_workflow(
    settings: Settings,
    nodes: Sequence[_Node],
    *,
    seed: int,
    total_budget: int,
    grade_scale: GradeScale | None = None,
    judge: JudgeConfig | None = None,
    stored: Mapping[str, Any] | None = None,
) -> WorkflowState:
    """The workflow of a real batch: its nodes (index = position), the anchors with a
    grade on ``grade_scale``, its judge or panel (``judge``), and for a batch that ran,
    its ``stored`` state (see :func:`workflow_from_settings`)."""
    anchor_grades: dict[int, int] = {}
    if grade_scale is not None:
        anchor_grades = {
            i: grade_scale.index(n.known_grade)
            for i, n in enumerate(nodes)
            if n.is_anchor and n.known_grade is not None and n.known_grade in grade_scale.grades
        }
    n_judges, double_share = panel_shape(judge, settings)
    return workflow_from_settings(
        settings,
        n_nodes=len(nodes),
        seed=seed,
        total_budget=total_budget,
        anchor_grades=anchor_grades,
        n_grades=len(grade_scale.grades) if grade_scale is not None else 0,
        students=[i for i, n in enumerate(nodes) if not n.is_anchor],
        n_judges=n_judges,
        double_share=double_share,
        stored=stored,
    )
