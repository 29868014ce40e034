"""Durable, fast writes on the executor's hot path, with group commit.

Every judge call is written *before* it is sent (status ``sent`` with its ``call_no``)
and its answer the moment it arrives; the caller awaits the commit. Writes queued while a
commit is under way are committed together in the next transaction, so many concurrent
calls cost few commits. A crash therefore loses at most the calls in flight, and the
stored ``call_no`` values never undercount what was sent.

Writes are queued in the order they are made and committed in that order, so when the
row of call ``n`` is committed, the rows of calls ``1..n-1`` are too: after a crash the
calls stored are exactly ``1..max(call_no)``. With an ``owner``, every transaction first
checks that this process still holds the batch's lock (and refreshes its heartbeat), so a
process whose lock was taken over cannot write another row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import StorageError
from cj_runner.storage.engine import Store
from cj_runner.storage.repository import (
    T_CACHE,
    T_COMPARISONS,
    T_STATE,
    fence,
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
class CacheKey:
    """Where a paid answer goes in the judgment cache: the request's hash (the key) and,
    for reading only, the model, the ordered essays and the repeat index."""

    request_key: str
    model: str
    checksum_a: str
    checksum_b: str
    repeat_index: int


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
    #: for a paid answer: where it goes in the judgment cache
    cache_key: CacheKey | None = None
    #: for an answer taken from the cache: the batch that paid for it
    cache_source: str | None = None


class Recorder:
    """Group-committing writer for one batch's comparisons."""

    def __init__(self, store: Store, batch_id: str, *, owner: str | None = None) -> None:
        self._store = store
        self._batch_id = batch_id
        self._owner = owner
        self._queue: asyncio.Queue[tuple[str, Any, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run(), name="cj-recorder")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush what is queued and stop the writer (also when the flush fails)."""
        if self._task is None:
            return
        try:
            if not self._task.done():
                await self.flush()
        finally:
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
                if any(kind != "flush" for kind, _, _ in batch):
                    async with self._store.engine.begin() as conn:
                        if self._owner is not None:
                            await fence(conn, self._batch_id, self._owner)
                        await self._apply(conn, batch)
                    self.commits += 1
            except BaseException as exc:
                error: BaseException = exc
                if isinstance(exc, SQLAlchemyError):
                    detail = getattr(exc, "orig", None) or exc
                    error = StorageError(f"cannot write to the database: {detail}")
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _apply(self, conn: AsyncConnection, batch: list[tuple[str, Any, Any]]) -> None:
        """Write one group: a few ``executemany`` statements, whatever its size.

        Within a group the order of kinds does not matter: a caller awaits the commit of a
        call's ``sent`` row before it can queue that call's result, and a wave's ``plan``
        before any of its calls.
        """
        bid = self._batch_id
        planned: list[dict[str, Any]] = []
        sent_first: list[dict[str, Any]] = []
        sent_retry: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        cache_rows: list[dict[str, Any]] = []
        set_status: list[dict[str, Any]] = []
        max_call = 0
        for kind, payload, _ in batch:
            if kind == "plan":
                planned.extend(
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
                if s.attempt == 1:  # the wave's planned row
                    sent_first.append(
                        {"k_batch": bid, "k_slot": s.slot, "k_attempt": 1}
                        | {f"v_{k}": v for k, v in values.items()}
                    )
                else:
                    sent_retry.append(
                        {
                            "batch_id": bid,
                            "slot": s.slot,
                            "attempt": s.attempt,
                            "a_idx": s.a_idx,
                            "b_idx": s.b_idx,
                            "mode": s.mode,
                            "wave": s.wave,
                            "repeat_index": s.repeat_index,
                            "cached": False,
                            **values,
                        }
                    )
            elif kind == "result":
                r: AttemptResult = payload
                results.append(
                    {
                        "k_batch": bid,
                        "k_slot": r.slot,
                        "k_attempt": r.attempt,
                        "v_status": r.status,
                        "v_received_at": r.received_at,
                        "v_winner": r.winner,
                        "v_confidence": r.confidence,
                        "v_justification": r.justification,
                        "v_error_kind": r.error_kind,
                        "v_error_message": r.error_message,
                        "v_tokens_in": r.tokens_in,
                        "v_tokens_out": r.tokens_out,
                        "v_latency_s": r.latency_s,
                        "v_cached": r.cached,
                        "v_cache_source": r.cache_source,
                    }
                )
                if r.cache_key is not None and r.status == "success" and not r.cached:
                    cache_rows.append(_cache_row(r, bid))
            elif kind in ("mark_failed", "cancel"):
                slot, attempt = payload
                set_status.append(
                    {
                        "k_batch": bid,
                        "k_slot": slot,
                        "k_attempt": attempt,
                        "v_status": "failed" if kind == "mark_failed" else "cancelled",
                        "v_now": utcnow(),
                    }
                )
        if planned:
            await conn.execute(insert(T_COMPARISONS), planned)
        if sent_first:
            done = await conn.execute(_SENT_UPDATE, sent_first)
            if conn.dialect.supports_sane_multi_rowcount and done.rowcount != len(sent_first):
                raise StorageError(
                    f"batch {bid}: a call was about to be sent for a comparison that is not "
                    "stored as planned"
                )
        if sent_retry:
            await conn.execute(insert(T_COMPARISONS), sent_retry)
        if results:
            await conn.execute(_RESULT_UPDATE, results)
        if set_status:
            await conn.execute(_STATUS_UPDATE, set_status)
        if cache_rows:
            await _cache_insert(conn, cache_rows)
        if max_call:
            await conn.execute(
                update(T_STATE)
                .where(and_(T_STATE.c.batch_id == bid, T_STATE.c.calls_sent < max_call))
                .values(calls_sent=max_call)
            )


_C = T_COMPARISONS.c
_KEY = and_(
    _C.batch_id == bindparam("k_batch"),
    _C.slot == bindparam("k_slot"),
    _C.attempt == bindparam("k_attempt"),
)
_SENT_UPDATE = (
    update(T_COMPARISONS)
    .where(_KEY)
    .values(
        {
            name: bindparam(f"v_{name}")
            for name in ("status", "call_no", "sent_at", "model", "prompt_hash")
        }
    )
)
_RESULT_UPDATE = (
    update(T_COMPARISONS)
    .where(_KEY)
    .values(
        {
            name: bindparam(f"v_{name}")
            for name in (
                "status",
                "received_at",
                "winner",
                "confidence",
                "justification",
                "error_kind",
                "error_message",
                "tokens_in",
                "tokens_out",
                "latency_s",
                "cached",
                "cache_source",
            )
        }
    )
)
_STATUS_UPDATE = (
    update(T_COMPARISONS)
    .where(_KEY)
    .values(
        status=bindparam("v_status"),
        received_at=func.coalesce(_C.received_at, bindparam("v_now", type_=_C.received_at.type)),
    )
)


def _cache_row(r: AttemptResult, batch_id: str) -> dict[str, Any]:
    key = r.cache_key
    assert key is not None
    return {
        "request_key": key.request_key,
        "model": key.model,
        "batch_id": batch_id,
        "checksum_a": key.checksum_a,
        "checksum_b": key.checksum_b,
        "repeat_index": key.repeat_index,
        "winner": r.winner,
        "confidence": r.confidence or 0,
        "justification": r.justification or "",
        "tokens_in": r.tokens_in or 0,
        "tokens_out": r.tokens_out or 0,
        "created_at": r.received_at,
    }


async def _cache_insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Add answers to the judgment cache; an answer already cached is kept."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        await conn.execute(sqlite_insert(T_CACHE).on_conflict_do_nothing(), rows)
    elif dialect == "postgresql":
        await conn.execute(pg_insert(T_CACHE).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - other databases: check first
        for values in rows:
            exists = await conn.execute(
                select(T_CACHE.c.id).where(T_CACHE.c.request_key == values["request_key"])
            )
            if exists.first() is None:
                await conn.execute(insert(T_CACHE).values(**values))
