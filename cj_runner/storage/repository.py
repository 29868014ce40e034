"""Rows <-> plain records. Every write here is one transaction: all or nothing."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import BatchLockedError, InputError, NotFoundError
from cj_runner.storage.engine import Store
from cj_runner.storage.schema import (
    AnchorRow,
    AssignmentRow,
    BatchRow,
    BatchStateRow,
    ComparisonRow,
    GradeProjectionRow,
    JudgmentCacheRow,
    NodeRow,
    TextRow,
    WaveRow,
)

T_TEXTS = cast(Table, TextRow.__table__)
T_ASSIGNMENTS = cast(Table, AssignmentRow.__table__)
T_ANCHORS = cast(Table, AnchorRow.__table__)
T_BATCHES = cast(Table, BatchRow.__table__)
T_STATE = cast(Table, BatchStateRow.__table__)
T_NODES = cast(Table, NodeRow.__table__)
T_COMPARISONS = cast(Table, ComparisonRow.__table__)
T_WAVES = cast(Table, WaveRow.__table__)
T_PROJECTIONS = cast(Table, GradeProjectionRow.__table__)
T_CACHE = cast(Table, JudgmentCacheRow.__table__)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class AssignmentRecord:
    """An assignment as stored."""

    id: str
    grade_scale: str
    grades: tuple[str, ...]
    instructions: str = ""
    student_prompt: str = ""
    rubric: str = ""


@dataclass(frozen=True)
class AnchorRecord:
    """A registered anchor with its text."""

    id: int
    assignment_id: str
    grade: str
    checksum: str
    source_name: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewAnchor:
    """An anchor to register."""

    source_name: str
    grade: str
    text: str
    checksum: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisterResult:
    """What ``register_anchors`` changed."""

    added: int
    unchanged: int
    removed: int
    assignment_changed: bool
    updated: tuple[str, ...] = ()
    """What changed on an existing assignment: ``grade scale``, ``instructions``,
    ``student prompt``, ``rubric``, and ``grade of FILE`` per re-graded anchor."""
    kept: int = 0
    """Registered anchors not in this manifest, kept because ``replace`` was not set."""


@dataclass(frozen=True)
class NewNode:
    """A node to create in a new batch (index = position in the list)."""

    essay_id: str
    is_anchor: bool
    checksum: str
    text: str
    known_grade: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchRecord:
    """A batch row joined with its state."""

    id: str
    name: str | None
    assignment_id: str | None
    status: str
    stop_reason: str | None
    seed: int
    settings: dict[str, Any]
    judge: dict[str, Any]
    judge_name: str
    inventory: str
    plan: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    state: dict[str, Any]


@dataclass(frozen=True)
class NodeRecord:
    """A node row with its text."""

    idx: int
    essay_id: str
    is_anchor: bool
    known_grade: str | None
    checksum: str
    text: str
    metadata: dict[str, Any]
    score: float | None
    se: float | None
    comparison_count: int
    a_count: int
    b_count: int
    infit: float | None
    outfit: float | None


# ---------------------------------------------------------------- texts


async def _put_texts(conn: AsyncConnection, texts: Iterable[tuple[str, str]]) -> None:
    wanted = dict(texts)
    if not wanted:
        return
    existing: set[str] = set()
    keys = list(wanted)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = await conn.execute(select(T_TEXTS.c.checksum).where(T_TEXTS.c.checksum.in_(chunk)))
        existing.update(r[0] for r in rows)
    missing = [{"checksum": k, "text": v} for k, v in wanted.items() if k not in existing]
    if missing:
        await conn.execute(insert(T_TEXTS), missing)


# ---------------------------------------------------------------- assignments and anchors


async def get_assignment(store: Store, assignment_id: str) -> AssignmentRecord | None:
    """The assignment, or ``None``."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(select(T_ASSIGNMENTS).where(T_ASSIGNMENTS.c.id == assignment_id))
        ).first()
    if row is None:
        return None
    return AssignmentRecord(
        id=row.id,
        grade_scale=row.grade_scale,
        grades=tuple(row.grades),
        instructions=row.instructions,
        student_prompt=row.student_prompt,
        rubric=row.rubric,
    )


async def register_anchors(
    store: Store,
    assignment: AssignmentRecord,
    anchors: Sequence[NewAnchor],
    *,
    replace: bool = False,
    update_texts: dict[str, str | None] | None = None,
) -> RegisterResult:
    """Create/update the assignment and add anchors not yet registered (by checksum).

    ``update_texts`` holds instructions/student_prompt/rubric given on this call (``None``
    = keep the stored one). With ``replace``, anchors of the assignment that are not in
    ``anchors`` are removed. A different grade scale for an existing assignment is refused
    unless ``replace`` is set. Registering the same input twice changes nothing.
    """
    now = utcnow()
    update_texts = update_texts or {}
    async with store.engine.begin() as conn:
        row = (
            await conn.execute(select(T_ASSIGNMENTS).where(T_ASSIGNMENTS.c.id == assignment.id))
        ).first()
        changed = False
        updated: list[str] = []
        if row is None:
            await conn.execute(
                insert(T_ASSIGNMENTS).values(
                    id=assignment.id,
                    grade_scale=assignment.grade_scale,
                    grades=list(assignment.grades),
                    instructions=update_texts.get("instructions") or "",
                    student_prompt=update_texts.get("student_prompt") or "",
                    rubric=update_texts.get("rubric") or "",
                    created_at=now,
                )
            )
            changed = True
        else:
            if row.grade_scale != assignment.grade_scale and not replace:
                raise InputError(
                    f"assignment {assignment.id!r} is registered with grade scale "
                    f"{row.grade_scale!r}, not {assignment.grade_scale!r} (use --replace)"
                )
            values: dict[str, Any] = {}
            if row.grade_scale != assignment.grade_scale:
                values["grade_scale"] = assignment.grade_scale
                values["grades"] = list(assignment.grades)
            for key, text in update_texts.items():
                if text is not None and getattr(row, key) != text:
                    values[key] = text
            updated.extend(k.replace("_", " ") for k in values if k != "grades")
            if values:
                await conn.execute(
                    update(T_ASSIGNMENTS)
                    .where(T_ASSIGNMENTS.c.id == assignment.id)
                    .values(**values)
                )
                changed = True
        existing = {
            r.checksum: r
            for r in await conn.execute(
                select(T_ANCHORS).where(T_ANCHORS.c.assignment_id == assignment.id)
            )
        }
        await _put_texts(conn, ((a.checksum, a.text) for a in anchors))
        added = unchanged = 0
        for anchor in anchors:
            old = existing.get(anchor.checksum)
            if old is not None and old.grade == anchor.grade:
                unchanged += 1
                continue
            if old is not None:
                if not replace:
                    raise InputError(
                        f"anchor {anchor.source_name!r} is registered with grade {old.grade!r},"
                        f" not {anchor.grade!r} (use --replace)"
                    )
                await conn.execute(
                    update(T_ANCHORS)
                    .where(T_ANCHORS.c.id == old.id)
                    .values(grade=anchor.grade, source_name=anchor.source_name)
                )
                updated.append(f"grade of {anchor.source_name} {old.grade} -> {anchor.grade}")
                added += 1
                continue
            await conn.execute(
                insert(T_ANCHORS).values(
                    assignment_id=assignment.id,
                    grade=anchor.grade,
                    checksum=anchor.checksum,
                    source_name=anchor.source_name,
                    metadata_json=dict(anchor.metadata),
                    created_at=now,
                )
            )
            added += 1
        removed = kept = 0
        keep = {a.checksum for a in anchors}
        gone = [r.id for c, r in existing.items() if c not in keep]
        if replace and gone:
            await conn.execute(delete(T_ANCHORS).where(T_ANCHORS.c.id.in_(gone)))
            removed = len(gone)
        elif gone:
            kept = len(gone)
    return RegisterResult(added, unchanged, removed, changed, tuple(updated), kept)


async def list_anchors(store: Store, assignment_id: str | None = None) -> list[AnchorRecord]:
    """Anchors (with text), ordered by assignment and registration."""
    query = (
        select(T_ANCHORS, T_TEXTS.c.text)
        .join(T_TEXTS, T_TEXTS.c.checksum == T_ANCHORS.c.checksum)
        .order_by(T_ANCHORS.c.assignment_id, T_ANCHORS.c.id)
    )
    if assignment_id is not None:
        query = query.where(T_ANCHORS.c.assignment_id == assignment_id)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        AnchorRecord(
            id=r.id,
            assignment_id=r.assignment_id,
            grade=r.grade,
            checksum=r.checksum,
            source_name=r.source_name,
            text=r.text,
            metadata=dict(r.metadata_json or {}),
        )
        for r in rows
    ]


# ---------------------------------------------------------------- batches


async def create_batch(
    store: Store,
    *,
    name: str | None,
    assignment_id: str | None,
    seed: int,
    settings: dict[str, Any],
    judge: dict[str, Any],
    judge_name: str,
    inventory: str,
    plan: dict[str, Any],
    total_budget: int,
    nodes: Sequence[NewNode],
    max_possible_pairs: int,
) -> str:
    """Create a batch, its state and its nodes in one transaction; returns the batch id."""
    try:
        async with store.engine.begin() as conn:
            return await insert_batch(
                conn,
                name=name,
                assignment_id=assignment_id,
                seed=seed,
                settings=settings,
                judge=judge,
                judge_name=judge_name,
                inventory=inventory,
                plan=plan,
                total_budget=total_budget,
                nodes=nodes,
                max_possible_pairs=max_possible_pairs,
            )
    except IntegrityError as exc:
        if name is not None and "name" in str(exc.orig).lower():
            raise InputError(f"--batch-name: a batch named {name!r} already exists") from exc
        raise


async def insert_batch(
    conn: AsyncConnection,
    *,
    name: str | None,
    assignment_id: str | None,
    seed: int,
    settings: dict[str, Any],
    judge: dict[str, Any],
    judge_name: str,
    inventory: str,
    plan: dict[str, Any],
    total_budget: int,
    nodes: Sequence[NewNode],
    max_possible_pairs: int,
) -> str:
    """Insert a batch, its state and its nodes inside the caller's transaction."""
    batch_id = uuid.uuid4().hex[:12]
    now = utcnow()
    await conn.execute(
        insert(T_BATCHES).values(
            id=batch_id,
            name=name,
            assignment_id=assignment_id,
            status="CREATED",
            stop_reason=None,
            seed=seed,
            settings_json=settings,
            judge_json=judge,
            judge_name=judge_name,
            inventory=inventory,
            plan_json=plan,
            created_at=now,
        )
    )
    await conn.execute(
        insert(T_STATE).values(
            batch_id=batch_id,
            total_budget=total_budget,
            calls_sent=0,
            successes=0,
            failures=0,
            iteration=0,
            current_mode="coverage",
            max_possible_pairs=max_possible_pairs,
            successful_pairs_count=0,
            unique_coverage_complete=False,
            resampling_pass_count=0,
            pass_remaining=[],
            tokens_in=0,
            tokens_out=0,
            cost_usd=0.0,
            extra_json={},
            updated_at=now,
        )
    )
    await _put_texts(conn, ((n.checksum, n.text) for n in nodes))
    await conn.execute(
        insert(T_NODES),
        [
            {
                "batch_id": batch_id,
                "idx": i,
                "essay_id": n.essay_id,
                "is_anchor": n.is_anchor,
                "known_grade": n.known_grade,
                "checksum": n.checksum,
                "metadata_json": dict(n.metadata),
                "comparison_count": 0,
                "a_count": 0,
                "b_count": 0,
            }
            for i, n in enumerate(nodes)
        ],
    )
    return batch_id


def _batch_record(row: Any, state: Any) -> BatchRecord:
    state_dict = dict(state._mapping) if state is not None else {}
    state_dict.pop("batch_id", None)
    return BatchRecord(
        id=row.id,
        name=row.name,
        assignment_id=row.assignment_id,
        status=row.status,
        stop_reason=row.stop_reason,
        seed=row.seed,
        settings=dict(row.settings_json),
        judge=dict(row.judge_json),
        judge_name=row.judge_name,
        inventory=row.inventory,
        plan=dict(row.plan_json or {}),
        created_at=row.created_at,
        finished_at=row.finished_at,
        state=state_dict,
    )


async def find_batch(store: Store, ref: str) -> BatchRecord:
    """The batch whose id or name is ``ref``; :class:`NotFoundError` otherwise."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(T_BATCHES).where(or_(T_BATCHES.c.id == ref, T_BATCHES.c.name == ref))
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no batch with id or name {ref!r} in this database")
        state = (await conn.execute(select(T_STATE).where(T_STATE.c.batch_id == row.id))).first()
    return _batch_record(row, state)


async def list_batches(store: Store) -> list[BatchRecord]:
    """Every batch, newest first."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_BATCHES, T_STATE)
                .join(T_STATE, T_STATE.c.batch_id == T_BATCHES.c.id)
                .order_by(T_BATCHES.c.created_at.desc())
            )
        ).all()
    out = []
    for r in rows:
        out.append(_batch_record(r, _StateView(r)))
    return out


class _StateView:
    """Adapter so a joined row can feed :func:`_batch_record`."""

    def __init__(self, row: Any) -> None:
        names = [c.name for c in T_STATE.columns]
        self._mapping = {n: row._mapping[T_STATE.c[n]] for n in names}


async def load_nodes(store: Store, batch_id: str) -> list[NodeRecord]:
    """The batch's nodes in index order, with their texts."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_NODES, T_TEXTS.c.text)
                .join(T_TEXTS, T_TEXTS.c.checksum == T_NODES.c.checksum)
                .where(T_NODES.c.batch_id == batch_id)
                .order_by(T_NODES.c.idx)
            )
        ).all()
    return [
        NodeRecord(
            idx=r.idx,
            essay_id=r.essay_id,
            is_anchor=bool(r.is_anchor),
            known_grade=r.known_grade,
            checksum=r.checksum,
            text=r.text,
            metadata=dict(r.metadata_json or {}),
            score=r.score,
            se=r.se,
            comparison_count=r.comparison_count,
            a_count=r.a_count,
            b_count=r.b_count,
            infit=r.infit,
            outfit=r.outfit,
        )
        for r in rows
    ]


async def load_attempts(store: Store, batch_id: str) -> list[dict[str, Any]]:
    """Every stored attempt of the batch, in slot and attempt order."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_COMPARISONS)
                .where(T_COMPARISONS.c.batch_id == batch_id)
                .order_by(T_COMPARISONS.c.slot, T_COMPARISONS.c.attempt)
            )
        ).all()
    return [dict(r._mapping) for r in rows]


async def load_waves(store: Store, batch_id: str) -> list[dict[str, Any]]:
    """The per-wave history."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_WAVES).where(T_WAVES.c.batch_id == batch_id).order_by(T_WAVES.c.wave)
            )
        ).all()
    return [dict(r._mapping) for r in rows]


async def load_projections(store: Store, batch_id: str) -> list[dict[str, Any]]:
    """Stored grade projections in node order."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_PROJECTIONS)
                .where(T_PROJECTIONS.c.batch_id == batch_id)
                .order_by(T_PROJECTIONS.c.node_idx)
            )
        ).all()
    return [dict(r._mapping) for r in rows]


# ---------------------------------------------------------------- locking

LOCK_STALE_AFTER = timedelta(seconds=30)
"""A lock whose heartbeat is older than this is free, whoever holds it."""


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; they were stored as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


async def acquire_lock(
    store: Store,
    batch_id: str,
    owner: str,
    *,
    owner_alive: Callable[[str], bool] | None = None,
) -> None:
    """Take the batch's run lock, or raise :class:`BatchLockedError`.

    A lock is free when nobody holds it, when its heartbeat is older than
    ``LOCK_STALE_AFTER``, or when ``owner_alive(lock_owner)`` says its process is gone.
    Taking it over is a compare-and-set on the previous holder, so of two processes that
    race for a free lock exactly one wins.
    """
    now = utcnow()
    async with store.engine.begin() as conn:
        row = (
            await conn.execute(
                select(T_BATCHES.c.lock_owner, T_BATCHES.c.lock_heartbeat).where(
                    T_BATCHES.c.id == batch_id
                )
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        holder, beat = row.lock_owner, _aware(row.lock_heartbeat)
        if holder and holder != owner:
            fresh = beat is not None and now - beat < LOCK_STALE_AFTER
            alive = owner_alive(holder) if owner_alive is not None else True
            if fresh and alive:
                raise BatchLockedError(
                    f"batch {batch_id} is being run by another process ({holder}); "
                    "wait for it or stop it first"
                )
        result = await conn.execute(
            update(T_BATCHES)
            .where(
                and_(
                    T_BATCHES.c.id == batch_id,
                    T_BATCHES.c.lock_owner.is_(None)
                    if holder is None
                    else T_BATCHES.c.lock_owner == holder,
                )
            )
            .values(lock_owner=owner, lock_heartbeat=now)
        )
        if result.rowcount != 1:
            raise BatchLockedError(f"batch {batch_id} was locked by another process just now")


# built once: a statement built per transaction costs SQLAlchemy a cache-key walk each time
_HEARTBEAT = (
    update(T_BATCHES)
    .where(
        and_(T_BATCHES.c.id == bindparam("k_batch"), T_BATCHES.c.lock_owner == bindparam("k_owner"))
    )
    .values(lock_heartbeat=bindparam("k_now"))
)


async def fence(conn: AsyncConnection, batch_id: str, owner: str) -> None:
    """Inside a write transaction: refresh the heartbeat, or raise when ``owner`` no longer
    holds the lock (another process took it over), so that nothing of this transaction
    is written."""
    result = await conn.execute(
        _HEARTBEAT, {"k_batch": batch_id, "k_owner": owner, "k_now": utcnow()}
    )
    if result.rowcount != 1:
        raise BatchLockedError(
            f"batch {batch_id} was taken over by another process; this one stopped writing"
        )


async def heartbeat(store: Store, batch_id: str, owner: str) -> bool:
    """Refresh the lock's heartbeat; ``False`` when ``owner`` no longer holds the lock."""
    async with store.engine.begin() as conn:
        result = await conn.execute(
            _HEARTBEAT, {"k_batch": batch_id, "k_owner": owner, "k_now": utcnow()}
        )
    return result.rowcount == 1


async def release_lock(store: Store, batch_id: str, owner: str) -> None:
    """Give the lock back (nothing happens when ``owner`` does not hold it)."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(T_BATCHES)
            .where(and_(T_BATCHES.c.id == batch_id, T_BATCHES.c.lock_owner == owner))
            .values(lock_owner=None, lock_heartbeat=None)
        )


async def lock_holder(store: Store, batch_id: str) -> tuple[str | None, datetime | None]:
    """Who holds the batch's lock and its last heartbeat (diagnostics and tests)."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(T_BATCHES.c.lock_owner, T_BATCHES.c.lock_heartbeat).where(
                    T_BATCHES.c.id == batch_id
                )
            )
        ).first()
    if row is None:
        raise NotFoundError(f"no batch {batch_id!r}")
    return row.lock_owner, _aware(row.lock_heartbeat)


# ---------------------------------------------------------------- judgment cache


async def cache_lookup(store: Store, request_key: str) -> dict[str, Any] | None:
    """The stored answer for exactly this request (see :class:`JudgmentCacheRow`), or None."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(select(T_CACHE).where(T_CACHE.c.request_key == request_key))
        ).first()
    return dict(row._mapping) if row is not None else None


async def count_rows(store: Store, table: str) -> int:
    """Row count of a table (diagnostics and tests)."""
    tables = {t.name: t for t in (T_COMPARISONS, T_NODES, T_BATCHES, T_ANCHORS, T_CACHE)}
    async with store.engine.connect() as conn:
        result = await conn.execute(select(func.count()).select_from(tables[table]))
        return int(result.scalar_one())


# ---------------------------------------------------------------- wave ends and finalization


async def save_wave_end(
    store: Store,
    batch_id: str,
    *,
    wave: dict[str, Any] | None,
    state: dict[str, Any],
    nodes: Sequence[dict[str, Any]] = (),
    status: str | None = None,
    owner: str | None = None,
) -> None:
    """Store one wave's history row, the batch state and node counters together.

    With ``owner``, nothing is written unless that process still holds the batch's lock.
    """
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        await write_wave_end(
            conn,
            batch_id,
            waves=[wave] if wave is not None else [],
            state=state,
            nodes=nodes,
            status=status,
        )


# built once: executed with the values as parameters (no statement built per wave)
_WAVE_INSERT = insert(T_WAVES)
_STATE_UPDATE = update(T_STATE).where(T_STATE.c.batch_id == bindparam("k_batch"))


async def write_wave_end(
    conn: AsyncConnection,
    batch_id: str,
    *,
    waves: Sequence[dict[str, Any]],
    state: dict[str, Any],
    nodes: Sequence[dict[str, Any]] = (),
    status: str | None = None,
) -> None:
    """The writes of :func:`save_wave_end` inside the caller's transaction (``waves``:
    the history rows of the waves closed since the last write, oldest first)."""
    now = utcnow()
    if waves:
        await conn.execute(
            _WAVE_INSERT, [{"batch_id": batch_id, "finished_at": now, **w} for w in waves]
        )
    await conn.execute(_STATE_UPDATE, {"k_batch": batch_id, "updated_at": now, **state})
    await _update_nodes(conn, batch_id, nodes)
    if status is not None:
        await conn.execute(
            update(T_BATCHES).where(T_BATCHES.c.id == batch_id).values(status=status)
        )


async def _update_nodes(
    conn: AsyncConnection, batch_id: str, nodes: Sequence[dict[str, Any]]
) -> None:
    """One ``executemany`` per set of columns (one set, in practice): a statement built per
    node cost SQLAlchemy a compile each, most of storing a 2,000-essay batch's results."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in nodes:
        columns = tuple(sorted(k for k in values if k != "idx"))
        row = {f"v_{k}": values[k] for k in columns}
        row.update(k_batch=batch_id, k_idx=values["idx"])
        groups.setdefault(columns, []).append(row)
    for columns, rows in groups.items():
        await conn.execute(_node_update(columns), rows)


@functools.lru_cache(maxsize=16)
def _node_update(columns: tuple[str, ...]) -> Any:
    return (
        update(T_NODES)
        .where(
            and_(T_NODES.c.batch_id == bindparam("k_batch"), T_NODES.c.idx == bindparam("k_idx"))
        )
        .values({k: bindparam(f"v_{k}") for k in columns})
    )


async def save_final(
    store: Store,
    batch_id: str,
    *,
    status: str,
    stop_reason: str | None,
    state: dict[str, Any],
    nodes: Sequence[dict[str, Any]],
    projections: Sequence[dict[str, Any]],
) -> None:
    """Store the final scores, projections, stop reason and status in one transaction."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(T_STATE)
            .where(T_STATE.c.batch_id == batch_id)
            .values(updated_at=utcnow(), **state)
        )
        await _update_nodes(conn, batch_id, nodes)
        await conn.execute(delete(T_PROJECTIONS).where(T_PROJECTIONS.c.batch_id == batch_id))
        if projections:
            await conn.execute(
                insert(T_PROJECTIONS), [{"batch_id": batch_id, **p} for p in projections]
            )
        finished = utcnow() if status in ("COMPLETED", "FAILED") else None
        await conn.execute(
            update(T_BATCHES)
            .where(T_BATCHES.c.id == batch_id)
            .values(status=status, stop_reason=stop_reason, finished_at=finished)
        )


async def set_status(
    store: Store,
    batch_id: str,
    status: str,
    stop_reason: str | None = None,
    *,
    owner: str | None = None,
) -> None:
    """Change a batch's status (and stop reason when given); with ``owner``, only while
    that process holds the lock."""
    values: dict[str, Any] = {"status": status}
    if stop_reason is not None:
        values["stop_reason"] = stop_reason
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        await conn.execute(update(T_BATCHES).where(T_BATCHES.c.id == batch_id).values(**values))


async def set_total_budget(store: Store, batch_id: str, budget: int) -> tuple[int, int]:
    """Change an unfinished batch's call budget; returns (old budget, calls sent).

    Raises:
        InputError: ``budget`` is below the calls already sent (they are spent).
    """
    async with store.engine.begin() as conn:
        row = (
            await conn.execute(
                select(T_STATE.c.total_budget, T_STATE.c.calls_sent).where(
                    T_STATE.c.batch_id == batch_id
                )
            )
        ).one()
        # after a crash the state may lag the stored calls: count those too
        stored = (
            await conn.execute(
                select(func.max(T_COMPARISONS.c.call_no)).where(
                    T_COMPARISONS.c.batch_id == batch_id
                )
            )
        ).scalar()
        old, sent = int(row.total_budget), max(int(row.calls_sent or 0), int(stored or 0))
        if budget < sent:
            raise InputError(
                f"--max-comparisons {budget}: the batch already sent {sent} call(s); "
                f"the budget cannot go below that"
            )
        if budget != old:
            await conn.execute(
                update(T_STATE).where(T_STATE.c.batch_id == batch_id).values(total_budget=budget)
            )
    return old, sent


async def mark_in_flight_lost(store: Store, batch_id: str, *, owner: str | None = None) -> int:
    """Calls stored as ``sent`` with no answer (a crash) become ``lost``; returns how many.
    Calls inside a provider job that has not ended stay ``sent`` (batch-API mode). With
    ``owner``, only while that process holds the lock (a process whose lock was taken
    over must not mark the new holder's calls in flight as lost)."""
    from cj_runner.storage.schema import ProviderJobRequestRow, ProviderJobRow

    jobs = cast(Table, ProviderJobRow.__table__)
    requests = cast(Table, ProviderJobRequestRow.__table__)
    # a call inside a provider job that has not ended is not lost: its answer is coming
    in_live_job = exists(
        select(requests.c.id)
        .select_from(requests.join(jobs, requests.c.job_key == jobs.c.job_key))
        .where(
            and_(
                jobs.c.batch_id == T_COMPARISONS.c.batch_id,
                jobs.c.state != "ended",
                requests.c.slot == T_COMPARISONS.c.slot,
                requests.c.attempt == T_COMPARISONS.c.attempt,
            )
        )
    )
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        result = await conn.execute(
            update(T_COMPARISONS)
            .where(
                and_(
                    T_COMPARISONS.c.batch_id == batch_id,
                    T_COMPARISONS.c.status == "sent",
                    ~in_live_job,
                )
            )
            .values(
                status="lost", error_kind="lost", error_message="in flight when the run stopped"
            )
        )
    return int(result.rowcount or 0)


async def unrelease(store: Store, batch_id: str, *, owner: str | None = None) -> None:
    """``released`` comparisons become ``planned`` again (after a clean stop); with
    ``owner``, only while that process holds the lock."""
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        await conn.execute(
            update(T_COMPARISONS)
            .where(and_(T_COMPARISONS.c.batch_id == batch_id, T_COMPARISONS.c.status == "released"))
            .values(status="planned")
        )


async def mark_possibly_sent(store: Store, batch_id: str, calls: Sequence[tuple[int, int]]) -> None:
    """Released first calls that may have gone out unrecorded become ``lost`` calls.

    ``calls`` holds ``(slot, call_no)``: each released row (attempt 1) gets its call
    number and counts against the budget like a call lost in flight.
    """
    if not calls:
        return
    c = T_COMPARISONS.c
    async with store.engine.begin() as conn:
        await conn.execute(
            update(T_COMPARISONS)
            .where(
                and_(
                    c.batch_id == batch_id,
                    c.slot == bindparam("k_slot"),
                    c.attempt == 1,
                    c.status == "released",
                )
            )
            .values(
                status="lost",
                call_no=bindparam("v_call"),
                error_kind="lost",
                error_message="possibly sent when the run stopped",
            ),
            [{"k_slot": slot, "v_call": call_no} for slot, call_no in calls],
        )
        await conn.execute(
            update(T_STATE)
            .where(T_STATE.c.batch_id == batch_id)
            .values(calls_sent=max(call_no for _, call_no in calls))
        )


async def cache_entries(store: Store, model: str) -> dict[str, dict[str, Any]]:
    """Every cached answer of ``model``, keyed by its request key; ``batch_id`` is the
    batch that paid for it."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(T_CACHE).where(T_CACHE.c.model == model))).all()
    return {
        r.request_key: {
            "winner": r.winner,
            "confidence": r.confidence,
            "justification": r.justification,
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "batch_id": r.batch_id,
        }
        for r in rows
    }
