"""Everything up to the first wave: inputs, settings, judge, nodes, plan and batch creation."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cj_runner.config import (
    ResolvedProfile,
    Settings,
    load_grade_scale,
    load_settings,
    settings_from_stored,
)
from cj_runner.core.coverage import expected_coverage_waves, max_possible_pairs
from cj_runner.core.models import GradeScale
from cj_runner.errors import InputError, UserError
from cj_runner.inputs import Inventory, load_inventory
from cj_runner.judges.base import AssignmentText, EssayText, JudgeRequest
from cj_runner.judges.config import (
    JudgeConfig,
    judge_config_from_mapping,
    load_judge_profile,
    panel_double_share,
)
from cj_runner.judges.prompts import estimate_call_tokens
from cj_runner.judges.registry import apply_overrides, judge_prompt_template
from cj_runner.storage import Store
from cj_runner.storage import repository as repo

if TYPE_CHECKING:
    from cj_runner.judges.base import Judge
    from cj_runner.services.executor import BatchExecutor

ANCHOR_ID_PREFIX = "anchor:"


@dataclass(frozen=True)
class JudgeOverrides:
    """Per-run judge overrides from the command line (the seeds' llm_config_overrides)."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    base_url: str | None = None
    #: ``--batch-api``: send through the provider's batch API (``None``: the profile's)
    batch: bool | None = None


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for on the command line."""

    inventory: Path
    assignment_id: str | None = None
    profile: str | None = None
    judge: str | tuple[str, ...] | None = None
    overrides: Sequence[str] = ()
    flag_values: Mapping[str, Any] = field(default_factory=dict)
    judge_overrides: JudgeOverrides = JudgeOverrides()
    batch_name: str | None = None


@dataclass(frozen=True)
class PreparedBatch:
    """Validated inputs of a batch, ready to plan or create."""

    request: RunRequest
    inventory: Inventory
    profile: ResolvedProfile
    settings: Settings
    judge_config: JudgeConfig
    assignment: repo.AssignmentRecord | None
    anchors: list[repo.AnchorRecord]
    grade_scale: GradeScale | None
    nodes: list[repo.NewNode]
    total_budget: int

    @property
    def students(self) -> int:
        return sum(1 for n in self.nodes if not n.is_anchor)

    @property
    def assignment_text(self) -> AssignmentText:
        a = self.assignment
        if a is None:
            return AssignmentText()
        return AssignmentText(a.instructions, a.student_prompt, a.rubric)


def parse_judge_share(value: str) -> tuple[str, float | None]:
    """``NAME:SHARE`` as ``(NAME, SHARE)``; a value without a numeric tail is ``(value,
    None)`` (a path may hold a colon)."""
    name, sep, tail = value.rpartition(":")
    if not sep or not name:
        return value, None
    try:
        share = float(tail)
    except ValueError:
        return value, None
    return name, share


def panel_from_judges(values: Sequence[str]) -> JudgeConfig:
    """The panel of ``--judge A[:SHARE] --judge B[:SHARE] ...`` (a missing share is 1).

    Raises:
        ConfigError: an unknown judge profile, a share that is not a positive number, or
            fewer than two judges.
    """
    members = []
    for value in values:
        name, share = parse_judge_share(value)
        members.append({"judge": name, "share": 1.0 if share is None else share})
    names = "+".join(parse_judge_share(v)[0].rsplit("/", 1)[-1] for v in values)
    mapping = {"kind": "mock", "name": f"panel:{names}"[:200], "panel": members}
    return judge_config_from_mapping(mapping, "--judge")


def resolve_judge_config(
    profile: ResolvedProfile,
    judge: str | Sequence[str] | None,
    overrides: JudgeOverrides,
    env: Mapping[str, str] | None = None,
) -> JudgeConfig:
    """``--judge`` beats the profile's ``judge:`` section; with neither, the default mock.
    Several ``--judge`` values (or one ``NAME:SHARE``) make a panel
    (:func:`panel_from_judges`)."""
    env = os.environ if env is None else env
    if judge is not None and not isinstance(judge, str):
        values = list(judge)
        if len(values) == 1 and parse_judge_share(values[0])[1] is None:
            config = load_judge_profile(values[0])
        else:
            config = panel_from_judges(values)
    elif judge is not None:
        config = load_judge_profile(judge)
    elif isinstance(profile.judge, str):
        config = load_judge_profile(profile.judge)
    elif isinstance(profile.judge, Mapping):
        config = judge_config_from_mapping(profile.judge, f"profile {profile.path}: judge")
    else:
        config = JudgeConfig()
    base_url = overrides.base_url or env.get("CJ_JUDGE_BASE_URL") or None
    return apply_overrides(
        config,
        model=overrides.model,
        temperature=overrides.temperature,
        max_tokens=overrides.max_tokens,
        base_url=base_url,
        batch=overrides.batch,
    )


def anchor_essay_id(anchor: repo.AnchorRecord) -> str:
    """The node id of an anchor inside a batch: ``anchor:<file stem>``."""
    return ANCHOR_ID_PREFIX + Path(anchor.source_name).stem


@dataclass(frozen=True)
class LocalInputs:
    """The inputs that need no database: settings, judge profile, inventory."""

    profile: ResolvedProfile
    judge_config: JudgeConfig
    inventory: Inventory


#: The longest batch name, assignment id, judge name or model the store keeps.
MAX_NAME_CHARS = 200


def check_name_length(option: str, value: str | None) -> None:
    """Refuse a name longer than the database column that holds it.

    Raises:
        UserError: naming the option and the limit.
    """
    if value is not None and len(value) > MAX_NAME_CHARS:
        raise UserError(f"{option}: at most {MAX_NAME_CHARS} characters (got {len(value)})")


def prepare_local(request: RunRequest) -> LocalInputs:
    """Validate settings, judge and inventory (no database touched)."""
    check_name_length("--batch-name", request.batch_name)
    check_name_length("--assignment-id", request.assignment_id)
    profile = load_settings(request.profile, request.overrides, flag_values=request.flag_values)
    judge_config = resolve_judge_config(profile, request.judge, request.judge_overrides)
    inventory = load_inventory(request.inventory)
    return LocalInputs(profile, judge_config, inventory)


async def prepare(
    store: Store | None, request: RunRequest, local: LocalInputs | None = None
) -> PreparedBatch:
    """Read and validate every input; nothing is written. Raises a one-line UserError.

    ``store`` may be ``None`` when there is no database yet (then an assignment cannot
    be found).
    """
    local = local or prepare_local(request)
    profile, judge_config, inventory = local.profile, local.judge_config, local.inventory
    settings = profile.settings
    assignment: repo.AssignmentRecord | None = None
    anchors: list[repo.AnchorRecord] = []
    scale: GradeScale | None = None
    if request.assignment_id is not None:
        if store is not None:
            assignment = await repo.get_assignment(store, request.assignment_id)
        if assignment is None:
            raise InputError(
                f"--assignment-id: no assignment {request.assignment_id!r} in the database; "
                "register its anchors first with `cj-anchors register`"
            )
        if settings.USE_ANCHORS:
            assert store is not None
            anchors = await repo.list_anchors(store, assignment.id)
            if not anchors:
                raise InputError(
                    f"--assignment-id: assignment {assignment.id!r} has no anchors, and grade "
                    "projection needs them (register anchors, or --set USE_ANCHORS=false)"
                )
            scale = load_grade_scale(assignment.grade_scale)
    nodes = [
        repo.NewNode(
            essay_id=e.essay_id,
            is_anchor=False,
            checksum=e.checksum,
            text=e.text,
            metadata=dict(e.metadata),
        )
        for e in inventory.essays
    ]
    student_ids = {e.essay_id for e in inventory.essays}
    for anchor in anchors:
        node_id = anchor_essay_id(anchor)
        if node_id in student_ids:
            raise InputError(f"{request.inventory}: essay id {node_id!r} clashes with an anchor")
        nodes.append(
            repo.NewNode(
                essay_id=node_id,
                is_anchor=True,
                checksum=anchor.checksum,
                text=anchor.text,
                known_grade=anchor.grade,
                metadata={k: str(v) for k, v in anchor.metadata.items()},
            )
        )
    student_texts = {e.checksum: e.essay_id for e in inventory.essays}
    same = [
        f"{request.inventory}: essay {student_texts[a.checksum]!r} has the same text as anchor "
        f"{Path(a.source_name).name!r} (grade {a.grade}); both take part in the batch"
        for a in anchors
        if a.checksum in student_texts
    ]
    if same:
        inventory = dc_replace(inventory, warnings=(*inventory.warnings, *same))
    clashes = [c for c, k in Counter(n.checksum for n in nodes if n.is_anchor).items() if k > 1]
    if clashes:  # pragma: no cover - registration refuses duplicate anchor texts
        raise InputError("two anchors have the same text")
    if len(nodes) < 2:
        raise InputError(f"{request.inventory}: a batch needs at least two essays")
    return PreparedBatch(
        request=request,
        inventory=inventory,
        profile=profile,
        settings=settings,
        judge_config=judge_config,
        assignment=assignment,
        anchors=anchors,
        grade_scale=scale,
        nodes=nodes,
        total_budget=settings.MAX_PAIRWISE_COMPARISONS,
    )


def plan_summary(prepared: PreparedBatch) -> dict[str, Any]:
    """The plan of a batch (spec §9): sizes, budget, waves, tokens and cost estimates."""
    settings = prepared.settings
    n = len(prepared.nodes)
    by_grade = Counter(a.grade for a in prepared.anchors)
    grades = prepared.grade_scale.grades if prepared.grade_scale else tuple(sorted(by_grade))
    template = judge_prompt_template(prepared.judge_config)
    # a representative call: the two essays of median length
    lengths = sorted(prepared.nodes, key=lambda node: len(node.text))
    mid = lengths[len(lengths) // 2]
    other = lengths[max(0, len(lengths) // 2 - 1)]
    request = JudgeRequest(
        essay_a=EssayText(mid.essay_id, mid.text, mid.checksum),
        essay_b=EssayText(other.essay_id, other.text, other.checksum),
        assignment=prepared.assignment_text,
    )
    per_in, per_out = estimate_call_tokens(template, request)
    calls = prepared.total_budget
    tokens_in, tokens_out = per_in * calls, per_out * calls
    cost = prepared.judge_config.cost(tokens_in, tokens_out)
    students = prepared.students
    double = panel_double_share(prepared.judge_config, settings.PANEL_DOUBLE_SHARE)
    panel = _panel_plan(prepared.judge_config, double, calls)
    return {
        "inventory": str(prepared.request.inventory),
        "assignment_id": prepared.assignment.id if prepared.assignment else None,
        "grade_scale": prepared.grade_scale.name if prepared.grade_scale else None,
        "profile": prepared.profile.name,
        "judge": prepared.judge_config.name,
        "judge_kind": prepared.judge_config.kind,
        "model": (
            "+".join(m.judge.model for m in prepared.judge_config.panel)
            if prepared.judge_config.panel
            else prepared.judge_config.model
        ),
        "judge_request": judge_request_shape(prepared.judge_config),
        "students": students,
        "anchors": len(prepared.anchors),
        "anchors_by_grade": {g: by_grade.get(g, 0) for g in grades},
        "nodes": n,
        "total_budget": prepared.total_budget,
        "max_possible_pairs": max_possible_pairs(n),
        "is_small_net": students <= settings.MIN_RESAMPLING_NET_SIZE,
        "wave_size": settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION,
        "expected_coverage_waves": expected_coverage_waves(
            n, prepared.total_budget, settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION, double
        ),
        "max_resampling_passes": (
            settings.MAX_RESAMPLING_PASSES_FOR_SMALL_NET
            if students <= settings.MIN_RESAMPLING_NET_SIZE
            else settings.MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH
        ),
        "estimated_calls": calls,
        **panel,
        "estimated_input_tokens": tokens_in,
        "estimated_output_tokens": tokens_out,
        "estimated_cost_usd": round(cost, 6),
        **_batch_estimates(prepared.judge_config, tokens_in, tokens_out),
        "warnings": list(prepared.inventory.warnings),
    }


def _panel_plan(config: JudgeConfig, double: float, calls: int) -> dict[str, Any]:
    """A panel's judges and how many of the budget's calls ask a pair a second time."""
    if not config.panel:
        return {}
    return {
        "panel_judges": [m.judge.name for m in config.panel],
        "panel_double_share": double,
        # of p pairs, d = share * p are asked twice: d / (p + d) of the calls
        "estimated_double_asks": round(calls * double / (1.0 + double)),
    }


def _batch_estimates(config: JudgeConfig, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    """A real judge's estimates at both prices: synchronous and through the batch API."""
    if config.kind == "mock":
        return {}
    sync = config.sync_cost(tokens_in, tokens_out)
    return {
        "batch_api": config.batch,
        "estimated_sync_cost_usd": round(sync, 6),
        "estimated_batch_cost_usd": round(sync * (1.0 - config.batch_discount), 6),
    }


def judge_request_shape(config: JudgeConfig) -> dict[str, Any] | None:
    """What requests to the judge's model carry (``None`` for the mock): the built-in rule
    that matched and the profile's overrides applied."""
    if config.kind == "mock":
        return None
    caps = config.capabilities
    return {
        "rule": caps.rule,
        "base_url": config.effective_base_url,
        "temperature": config.temperature if caps.temperature else None,
        "top_p": config.top_p if caps.top_p else None,
        "max_tokens_param": caps.max_tokens_param,
        "max_tokens": config.max_tokens,
        "max_tokens_after_truncation": config.effective_max_tokens_ceiling,
        "reasoning_effort": config.reasoning_effort if caps.reasoning else None,
        "thinking": config.thinking if config.kind == "anthropic" else None,
        "structured_output": list(caps.forms),
    }


def judge_record(config: JudgeConfig) -> dict[str, Any]:
    """What is stored about the judge: its profile (names of key variables, never keys)."""
    return config.model_dump(mode="json")


async def create_batch(store: Store, prepared: PreparedBatch, plan: dict[str, Any]) -> str:
    """Store a new batch (settings, judge, nodes, state) in one transaction."""
    return await repo.create_batch(store, **batch_fields(prepared, plan))


def batch_fields(prepared: PreparedBatch, plan: dict[str, Any]) -> dict[str, Any]:
    """What is stored about a new batch (:func:`repository.insert_batch`'s arguments)."""
    settings = prepared.settings
    seed = settings.SEED if settings.SEED is not None else secrets.randbelow(2**31)
    stored_settings = settings.model_dump(mode="json")
    stored_settings["SEED"] = seed
    return {
        "name": prepared.request.batch_name,
        "assignment_id": prepared.assignment.id if prepared.assignment else None,
        "seed": seed,
        "settings": stored_settings,
        "judge": judge_record(prepared.judge_config),
        "judge_name": prepared.judge_config.name,
        "inventory": str(prepared.request.inventory),
        "plan": plan,
        "total_budget": prepared.total_budget,
        "nodes": prepared.nodes,
        "max_possible_pairs": max_possible_pairs(len(prepared.nodes)),
    }


def stored_judge_config(batch: repo.BatchRecord) -> JudgeConfig:
    """The judge profile stored with a batch."""
    return judge_config_from_mapping(batch.judge, f"batch {batch.id}: judge")


async def batch_context(store: Store, batch_id: str) -> dict[str, Any]:
    """A stored batch with its nodes, settings, assignment text and grade scale (what
    ``cj-run resume``, ``finalize`` and the queue worker run it with)."""
    batch = await repo.find_batch(store, batch_id)
    nodes = await repo.load_nodes(store, batch.id)
    settings = settings_from_stored(batch.settings)
    assignment_text = None
    scale = None
    if batch.assignment_id is not None:
        assignment = await repo.get_assignment(store, batch.assignment_id)
        if assignment is not None:
            assignment_text = AssignmentText(
                assignment.instructions, assignment.student_prompt, assignment.rubric
            )
            if any(n.is_anchor for n in nodes):
                scale = load_grade_scale(assignment.grade_scale)
    return {
        "batch": batch,
        "nodes": nodes,
        "settings": settings,
        "assignment": assignment_text,
        "grade_scale": scale,
    }


def stored_executor(
    store: Store, context: Mapping[str, Any], judge: Judge, **options: Any
) -> BatchExecutor:
    """The executor of a stored batch (``context`` from :func:`batch_context`: its nodes,
    settings, assignment text and grade scale) asking ``judge``; ``options`` are
    :class:`~cj_runner.services.executor.BatchExecutor`'s other keyword arguments (the
    cache, a stop event, the batch API, ...)."""
    from cj_runner.services.executor import BatchExecutor  # heavy: only when a batch runs

    return BatchExecutor(
        store,
        context["batch"],
        context["nodes"],
        judge,
        context["settings"],
        assignment=context["assignment"],
        grade_scale=context["grade_scale"],
        **options,
    )
