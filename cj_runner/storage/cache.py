"""The judgment cache: answers paid for once, reused by request key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cj_runner.storage.engine import Store
from cj_runner.storage.tables import T_CACHE


async def cache_lookup(store: Store, request_key: str) -> dict[str, Any] | None:
    """The stored answer for exactly this request (see :class:`JudgmentCacheRow`), or None."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(select(T_CACHE).where(T_CACHE.c.request_key == request_key))
        ).first()
    return dict(row._mapping) if row is not None else None


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
