"""Imported judgments (table ``imported_judgments``): store a checked file in one
transaction, read a batch's imports back, and list the files already imported."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import InputError
from cj_runner.storage.engine import Store
from cj_runner.storage.schema import ImportedJudgmentRow
from cj_runner.storage.tables import T_BATCHES, utcnow

T_IMPORTS = cast(Table, ImportedJudgmentRow.__table__)


async def store_imported(
    store: Store,
    batch_id: str,
    rows: Sequence[dict[str, Any]],
    *,
    source_name: str,
    source_checksum: str,
) -> datetime:
    """Insert the judgments of one file in one transaction; returns the import time.

    Each row has ``a_idx``, ``b_idx``, ``winner``, ``judge``, ``judged_at``, ``row`` and
    ``metadata``.

    Raises:
        InputError: a file with the same SHA-256 was already imported into this batch
            (checked inside the transaction, so two concurrent imports cannot both land).
    """
    async with store.engine.begin() as conn:
        return await insert_imported(
            conn, batch_id, rows, source_name=source_name, source_checksum=source_checksum
        )


async def insert_imported(
    conn: AsyncConnection,
    batch_id: str,
    rows: Sequence[dict[str, Any]],
    *,
    source_name: str,
    source_checksum: str,
) -> datetime:
    """:func:`store_imported` inside the caller's transaction."""
    now = utcnow()
    # take the batch row's write lock first (PostgreSQL; SQLite locks the database)
    await conn.execute(
        T_BATCHES.update().where(T_BATCHES.c.id == batch_id).values(id=T_BATCHES.c.id)
    )
    earlier = (
        await conn.execute(
            select(func.min(T_IMPORTS.c.imported_at), func.min(T_IMPORTS.c.source_name))
            .where(T_IMPORTS.c.batch_id == batch_id)
            .where(T_IMPORTS.c.source_checksum == source_checksum)
        )
    ).one()
    if earlier[0] is not None:
        when = earlier[0].strftime("%Y-%m-%d %H:%M")
        alias = f" (as {earlier[1]})" if earlier[1] != source_name else ""
        raise InputError(
            f"{source_name}: this file{alias} was already imported into batch "
            f"{batch_id} on {when} UTC; nothing was added"
        )
    await conn.execute(
        insert(T_IMPORTS),
        [
            {
                "batch_id": batch_id,
                "a_idx": r["a_idx"],
                "b_idx": r["b_idx"],
                "winner": r["winner"],
                "judge": r["judge"],
                "judged_at": r["judged_at"],
                "source_name": source_name,
                "source_checksum": source_checksum,
                "source_row": r["row"],
                "metadata_json": dict(r["metadata"]),
                "imported_at": now,
            }
            for r in rows
        ],
    )
    return now


async def load_imported(store: Store, batch_id: str) -> list[dict[str, Any]]:
    """The batch's imported judgments in import order (file by file, row by row)."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_IMPORTS).where(T_IMPORTS.c.batch_id == batch_id).order_by(T_IMPORTS.c.id)
            )
        ).all()
    return [dict(r._mapping) for r in rows]
