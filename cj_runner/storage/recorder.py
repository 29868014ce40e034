"""Durable, fast writes on the executor's hot path, with group commit.

Every judge call is written *before* it is sent (status ``sent`` with its ``call_no``)
and its answer the moment it arrives; the caller awaits the commit. Writes queued while a
commit is under way are committed together in the next transaction, so many concurrent
calls cost few commits. A crash therefore loses at most the calls in flight, and the
stored ``call_no`` values never undercount what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.storage.engine import Store
from cj_runner.storage.repository import (
    T_CACHE,
    T_COMPARISONS,
    T_STATE,
    utcnow,
)


@dataclass(frozen=True)
class PlannedRow:
    """A comparison of a wave, stored before any call is sent."""

    slot: int
    a_idx: int
    b_idx: int
    mode: str
    wave: int
    repeat_index: int


@dataclass(frozen=True)
class SentAttempt:
    """One call about to be sent."""

    slot: int
    attempt: int
    call_no: int
    a_idx: int
    b_idx: int
    mode: str
    wave: int
    repeat_index: int
    model: str
    prompt_hash: str
    sent_at: datetime


@dataclass(frozen=True)
class AttemptResult:
    """What came back for one call."""

    slot: int
    attempt: int
    status: str
    received_at: datetime
    winner: str | None = None
    confidence: int | None = None
    justification: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_s: float | None = None
    cached: bool = False
    cache_key: tuple[str, str, str, str, int] | None = None


class Recorder:
    """Group-committing writer for one batch's comparisons."""

    def __init__(self, store: Store, batch_id: str) -> None:
        self._store = store
        self._batch_id = batch_id
        self._queue: asyncio.Queue[tuple[str, Any, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run(), name="cj-recorder")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush what is queued and stop the writer."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _submit(self, kind: str, payload: Any) -> None:
        if self._task is None or self._task.done():
            if self._task is not None and self._task.exception() is not None:
                raise self._task.exception()  # type: ignore[misc]
            raise RuntimeError("recorder is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((kind, payload, future))
        await future

    async def plan(self, rows: Sequence[PlannedRow]) -> None:
        """Store a wave's comparisons as ``planned`` (not sent, not counted)."""
        if rows:
            await self._submit("plan", list(rows))

    async def sent(self, attempt: SentAttempt) -> None:
        """Store that a call is about to be sent; returns once committed."""
        await self._submit("sent", attempt)

    async def result(self, result: AttemptResult) -> None:
        """Store a call's answer or error; returns once committed."""
        await self._submit("result", result)

    async def cancel(self, slot: int, attempt: int) -> None:
        """Mark a planned comparison that will not be sent (budget or interrupt)."""
        await self._submit("cancel", (slot, attempt))

    async def mark_failed(self, slot: int, attempt: int) -> None:
        """Turn an attempt stored as ``retried`` into the comparison's final failure."""
        await self._submit("mark_failed", (slot, attempt))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self._submit("flush", None)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with self._store.engine.begin() as conn:
                    await self._apply(conn, batch)
                self.commits += 1
            except BaseException as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _apply(self, conn: AsyncConnection, batch: list[tuple[str, Any, Any]]) -> None:
        bid = self._batch_id
        c = T_COMPARISONS.c
        max_call = 0
        for kind, payload, _ in batch:
            if kind == "plan":
                await conn.execute(
                    insert(T_COMPARISONS),
                    [
                        {
                            "batch_id": bid,
                            "slot": r.slot,
                            "attempt": 1,
                            "a_idx": r.a_idx,
                            "b_idx": r.b_idx,
                            "mode": r.mode,
                            "wave": r.wave,
                            "status": "planned",
                            "repeat_index": r.repeat_index,
                            "cached": False,
                        }
                        for r in payload
                    ],
                )
            elif kind == "sent":
                s: SentAttempt = payload
                max_call = max(max_call, s.call_no)
                values = {
                    "status": "sent",
                    "call_no": s.call_no,
                    "sent_at": s.sent_at,
                    "model": s.model,
                    "prompt_hash": s.prompt_hash,
                }
                if s.attempt == 1:
                    res = await conn.execute(
                        update(T_COMPARISONS)
                        .where(and_(c.batch_id == bid, c.slot == s.slot, c.attempt == 1))
                        .values(**values)
                    )
                    if res.rowcount == 1:
                        continue
                await conn.execute(
                    insert(T_COMPARISONS).values(
                        batch_id=bid,
                        slot=s.slot,
                        attempt=s.attempt,
                        a_idx=s.a_idx,
                        b_idx=s.b_idx,
                        mode=s.mode,
                        wave=s.wave,
                        repeat_index=s.repeat_index,
                        cached=False,
                        **values,
                    )
                )
            elif kind == "result":
                r: AttemptResult = payload
                await conn.execute(
                    update(T_COMPARISONS)
                    .where(and_(c.batch_id == bid, c.slot == r.slot, c.attempt == r.attempt))
                    .values(
                        status=r.status,
                        received_at=r.received_at,
                        winner=r.winner,
                        confidence=r.confidence,
                        justification=r.justification,
                        error_kind=r.error_kind,
                        error_message=r.error_message,
                        tokens_in=r.tokens_in,
                        tokens_out=r.tokens_out,
                        latency_s=r.latency_s,
                        cached=r.cached,
                    )
                )
                if r.cache_key is not None and r.status == "success" and not r.cached:
                    await _cache_insert(conn, r)
            elif kind == "mark_failed":
                slot, attempt = payload
                await conn.execute(
                    update(T_COMPARISONS)
                    .where(and_(c.batch_id == bid, c.slot == slot, c.attempt == attempt))
                    .values(status="failed")
                )
            elif kind == "cancel":
                slot, attempt = payload
                await conn.execute(
                    update(T_COMPARISONS)
                    .where(and_(c.batch_id == bid, c.slot == slot, c.attempt == attempt))
                    .values(status="cancelled", received_at=utcnow())
                )
        if max_call:
            await conn.execute(
                update(T_STATE)
                .where(and_(T_STATE.c.batch_id == bid, T_STATE.c.calls_sent < max_call))
                .values(calls_sent=max_call)
            )


async def _cache_insert(conn: AsyncConnection, r: AttemptResult) -> None:
    assert r.cache_key is not None
    model, prompt_hash, ca, cb, repeat = r.cache_key
    values = {
        "model": model,
        "prompt_hash": prompt_hash,
        "checksum_a": ca,
        "checksum_b": cb,
        "repeat_index": repeat,
        "winner": r.winner,
        "confidence": r.confidence or 0,
        "justification": r.justification or "",
        "tokens_in": r.tokens_in or 0,
        "tokens_out": r.tokens_out or 0,
        "created_at": r.received_at,
    }
    dialect = conn.dialect.name
    if dialect == "sqlite":
        await conn.execute(sqlite_insert(T_CACHE).values(**values).on_conflict_do_nothing())
    elif dialect == "postgresql":
        await conn.execute(pg_insert(T_CACHE).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - other databases: check first
        exists = await conn.execute(
            select(T_CACHE.c.id).where(
                T_CACHE.c.model == model,
                T_CACHE.c.prompt_hash == prompt_hash,
                T_CACHE.c.checksum_a == ca,
                T_CACHE.c.checksum_b == cb,
                T_CACHE.c.repeat_index == repeat,
            )
        )
        if exists.first() is None:
            await conn.execute(insert(T_CACHE).values(**values))
