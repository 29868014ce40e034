"""Batches: creating them, reading them with their nodes, calls, waves and projections,
their status and budget. Every write is one transaction: all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import InputError, NotFoundError
from cj_runner.storage.engine import Store
from cj_runner.storage.locks import fence
from cj_runner.storage.records import BatchRecord, NewNode, NodeRecord
from cj_runner.storage.tables import (
    T_ANCHORS,
    T_BATCHES,
    T_CACHE,
    T_COMPARISONS,
    T_NODES,
    T_PROJECTIONS,
    T_STATE,
    T_TEXTS,
    T_WAVES,
    put_texts,
    utcnow,
)


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
    await put_texts(conn, ((n.checksum, n.text) for n in nodes))
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


async def count_rows(store: Store, table: str) -> int:
    """Row count of a table (diagnostics and tests)."""
    tables = {t.name: t for t in (T_COMPARISONS, T_NODES, T_BATCHES, T_ANCHORS, T_CACHE)}
    async with store.engine.connect() as conn:
        result = await conn.execute(select(func.count()).select_from(tables[table]))
        return int(result.scalar_one())


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
