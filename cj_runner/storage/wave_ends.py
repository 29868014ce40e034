"""What a run writes when a wave closes and when the batch is finalized: the wave's row,
the batch state, node scores and counters, grade projections."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.storage.engine import Store
from cj_runner.storage.locks import fence
from cj_runner.storage.tables import T_BATCHES, T_NODES, T_PROJECTIONS, T_STATE, T_WAVES, utcnow


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
