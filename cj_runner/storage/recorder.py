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

One bad row never costs the others: every text is made storable first
(:mod:`cj_runner.storage.storable`), and when a group's transaction still fails the group
is written again row by row. A row that fails alone is stored as the call's error
(``error_kind`` ``unstorable``, status ``failed``) and its caller gets
:class:`UnstorableAnswer`; the other rows of the group are stored as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import CJError, StorageError
from cj_runner.storage.engine import Store
from cj_runner.storage.locks import fence
from cj_runner.storage.provider_jobs import T_JOB_REQUESTS, T_JOBS, JobRecord
from cj_runner.storage.storable import storable_justification, storable_message, storable_text
from cj_runner.storage.tables import T_CACHE, T_COMPARISONS, T_STATE, utcnow
from cj_runner.storage.wave_ends import write_wave_end

IDLE_WINDOW_S = 0.002
"""Group-commit window while no judge call is in flight (a zero-latency judge, the last
answers of a wave): long enough for the writes of the same burst (a wave's answers, the
next plan) to share a transaction, short enough not to stall the batch. Measured at 2,000
essays with a zero-latency judge: 830 calls/s with the full 10 ms, ~930 committing at
once (2.6 times the transactions), ~1,090 with 2 ms."""


class UnstorableAnswer(StorageError):
    """A call's result could not be stored as it came; it was stored as the call's error
    (status ``failed``, ``error_kind`` ``unstorable``), with ``result`` the row written."""

    def __init__(self, message: str, result: AttemptResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class PlannedRow:
    """A comparison of a wave, stored before any call is sent."""

    slot: int
    a_idx: int
    b_idx: int
    mode: str
    wave: int
    repeat_index: int
    judge: str | None = None  # a panel batch's judge for this comparison


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
    judge: str | None = None  # a panel batch's judge for this comparison


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
    tokens_cached: int | None = None
    latency_s: float | None = None
    cached: bool = False
    #: for a paid answer: where it goes in the judgment cache
    cache_key: CacheKey | None = None
    #: for an answer taken from the cache: the batch that paid for it
    cache_source: str | None = None
    #: the provider's id for the request (logged with ``--verbose``; not stored)
    request_id: str | None = None


class Recorder:
    """Group-committing writer for one batch's comparisons."""

    def __init__(
        self,
        store: Store,
        batch_id: str,
        *,
        owner: str | None = None,
        group_window_s: float = 0.0,
        gather_while: Callable[[], bool] | None = None,
    ) -> None:
        """``group_window_s``: the shortest time between two transactions, to gather the
        writes that come meanwhile; with ``gather_while``, that long only while it says
        more writes are on their way (judge calls in flight), else at most
        :data:`IDLE_WINDOW_S`: when every call has answered, a long wait would only hold
        their answers back."""
        self._store = store
        self._group_window_s = group_window_s
        self._gather_while = gather_while
        self._batch_id = batch_id
        self._owner = owner
        self._queue: asyncio.Queue[tuple[str, Any, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self._failure: BaseException | None = None
        # writes queued without waiting (_post) and not committed yet: when one fails,
        # every write queued after it fails too (it may be about the rows it held)
        self._unawaited: set[asyncio.Future[None]] = set()
        # one connection for the writer's life: no pool checkout and reset per group
        self._conn: AsyncConnection | None = None

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
        if self._failure is not None:
            raise self._failure
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

    def plan_ahead(self, rows: Sequence[PlannedRow]) -> None:
        """Queue a wave's ``planned`` rows without waiting for their commit.

        Writes commit in the order they are queued, so the rows are on disk before any
        later write about them (a release, a call sent, a cached answer, a cancel) and
        so before any of their calls goes out. A failed commit is raised by the next write.
        """
        if rows:
            self._post("plan", list(rows))

    async def sent(self, attempt: SentAttempt) -> None:
        """Store that a call is about to be sent; returns once committed."""
        await self._submit("sent", attempt)

    async def release(self, slots: Sequence[int]) -> None:
        """Mark planned comparisons ``released``: their first calls may go out next
        without waiting for their ``sent`` rows (:meth:`sent_ahead`); returns once
        committed. After a crash, resume counts released rows as sent."""
        if slots:
            await self._submit("release", list(slots))

    def sent_ahead(self, attempt: SentAttempt) -> None:
        """Queue a ``sent`` row without waiting for its commit (the call goes out now).

        Only for the first call of a comparison whose ``released`` mark is committed
        (:meth:`release`): the crash that loses this row leaves that mark, which resume
        counts as a call sent. A failed commit is raised by the next write.
        """
        self._post("sent", attempt)

    def _post(self, kind: str, payload: Any) -> None:
        """Queue a write without waiting for its commit (a failure is raised later)."""
        if self._failure is not None:
            raise self._failure
        if self._task is None or self._task.done():
            raise RuntimeError("recorder is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(self._posted)
        self._unawaited.add(future)
        self._queue.put_nowait((kind, payload, future))

    async def result(self, result: AttemptResult) -> None:
        """Store a call's answer or error; returns once committed."""
        await self._submit("result", result)

    async def job(self, job: JobRecord, sent: Sequence[SentAttempt]) -> None:
        """Store a provider job with its requests and the ``sent`` rows of their attempts,
        in one transaction (batch-API mode); returns once committed."""
        await self._submit("job", (job, list(sent)))

    async def cancel(self, slot: int, attempt: int) -> None:
        """Mark a planned comparison that will not be sent (budget or interrupt)."""
        await self._submit("cancel", (slot, attempt))

    async def mark_failed(self, slot: int, attempt: int) -> None:
        """Turn an attempt stored as ``retried`` into the comparison's final failure."""
        await self._submit("mark_failed", (slot, attempt))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self._submit("flush", None)

    def wave_end(self, wave: dict[str, Any], state: dict[str, Any]) -> None:
        """Queue a closed wave's row and the batch state for the next group commit.

        One writer for the whole run: the wave end does not compete with the calls'
        commits for the database lock (pipelined waves close while calls are in flight).
        It does not wait for the commit: a later write (the next wave's plan, a flush)
        commits it first, since the queue commits in order; a failed commit is raised by
        the next write.
        """
        self._post("wave_end", (wave, state))

    def _posted(self, future: asyncio.Future[None]) -> None:
        self._unawaited.discard(future)
        self._note_failure(future)

    def _note_failure(self, future: asyncio.Future[None]) -> None:
        # (retrieving the exception also keeps asyncio from logging it as never retrieved)
        exc = None if future.cancelled() else future.exception()
        if exc is not None and self._failure is None:
            self._failure = exc

    async def _commit(self, batch: list[tuple[str, Any, asyncio.Future[None]]]) -> None:
        if all(kind == "flush" for kind, _, _ in batch):
            return
        if self._conn is None:
            self._conn = await self._store.engine.connect()
        conn = self._conn
        try:
            async with conn.begin():
                if self._owner is not None:
                    await fence(conn, self._batch_id, self._owner)
                await self._apply(conn, batch)
        except BaseException:
            # the transaction was rolled back; a connection that broke is not reused (the
            # next group opens a new one)
            self._conn = None
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
            raise
        self.commits += 1

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = -math.inf
        while True:
            first = await self._queue.get()
            # many answers a second: gather them into fewer, larger transactions (each
            # costs the event loop more than its rows); nothing waits longer than the window
            window = self._group_window_s
            if self._gather_while is not None and not self._gather_while():
                window = min(window, IDLE_WINDOW_S)
            wait = last + window - loop.time()
            if wait > 0 and first[0] != "flush":
                await asyncio.sleep(wait)
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._failure is not None:
                # a write queued earlier without waiting failed: what follows it may be
                # about its rows (a result for a call whose ``sent`` row was refused)
                _fail_all(batch, self._failure)
                continue
            try:
                await self._commit(batch)
                last = loop.time()
            except asyncio.CancelledError as exc:
                _fail_all(batch, exc)
                raise
            except CJError as exc:  # lock taken over, or a row that is not planned
                _fail_all(batch, exc)
                self._failed_unawaited(batch)
                continue
            except Exception:  # one bad row: write the group row by row
                await self._row_by_row(batch)
                self._failed_unawaited(batch)
                continue
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def _failed_unawaited(self, batch: list[tuple[str, Any, asyncio.Future[None]]]) -> None:
        """Note at once the failure of a write queued without waiting (its done callback
        runs only later, after the writer may have taken the next group)."""
        for _, _, fut in batch:
            if fut in self._unawaited and fut.done():
                self._note_failure(fut)

    async def _row_by_row(self, batch: list[tuple[str, Any, asyncio.Future[None]]]) -> None:
        """Write each entry of a failed group in its own transaction, in order; a result
        that fails alone is stored as its call's error instead."""
        for entry in batch:
            kind, payload, fut = entry
            try:
                await self._commit([entry])
            except asyncio.CancelledError as exc:
                _fail_all(batch, exc)
                raise
            except Exception as exc:
                if kind != "result" or isinstance(exc, CJError):
                    fut.set_exception(_storage_error(exc))
                    continue
                replacement = _unstorable(payload, exc)
                try:
                    await self._commit([("result", replacement, fut)])
                except asyncio.CancelledError as again:
                    _fail_all(batch, again)
                    raise
                except Exception as again:
                    fut.set_exception(_storage_error(again))
                    continue
                fut.set_exception(
                    UnstorableAnswer(replacement.error_message or "unstorable", replacement)
                )
                continue
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
        sent_answered: list[dict[str, Any]] = []
        retry_answered: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        cache_rows: list[dict[str, Any]] = []
        set_status: list[dict[str, Any]] = []
        wave_ends: list[tuple[dict[str, Any], dict[str, Any]]] = []
        released: list[dict[str, Any]] = []
        jobs: list[JobRecord] = []
        max_call = 0
        entries: list[tuple[str, Any]] = []
        for kind, payload, _ in batch:
            if kind == "job":
                jobs.append(payload[0])
                entries.extend(("sent", s) for s in payload[1])
            else:
                entries.append((kind, payload))
        # a call's result committed with its own ``sent`` row (zero or low latency): one
        # statement writes both
        sent_keys = {
            (p.slot, p.attempt) for k, p in entries if k == "sent" and isinstance(p, SentAttempt)
        }
        merged: dict[tuple[int, int], AttemptResult] = {}
        for kind, payload in entries:
            if kind == "result" and (payload.slot, payload.attempt) in sent_keys:
                merged[(payload.slot, payload.attempt)] = storable_result(payload)
        for kind, payload in entries:
            if kind == "wave_end":
                wave_ends.append(payload)
            elif kind == "release":
                released.extend({"k_batch": bid, "k_slot": slot} for slot in payload)
            elif kind == "plan":
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
                        "judge": r.judge,
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
                answer = merged.get((s.slot, s.attempt))
                if s.attempt == 1:  # the wave's planned row
                    key = {"k_batch": bid, "k_slot": s.slot, "k_attempt": 1}
                    if answer is None:
                        sent_first.append(key | {f"v_{k}": v for k, v in values.items()})
                    else:
                        sent_answered.append(
                            key | {f"v_{k}": v for k, v in values.items()} | _result_values(answer)
                        )
                else:
                    row = {
                        "batch_id": bid,
                        "slot": s.slot,
                        "attempt": s.attempt,
                        "a_idx": s.a_idx,
                        "b_idx": s.b_idx,
                        "mode": s.mode,
                        "wave": s.wave,
                        "repeat_index": s.repeat_index,
                        "cached": False,
                        "judge": s.judge,
                        **values,
                    }
                    if answer is None:
                        sent_retry.append(row)
                    else:
                        row.update({k[2:]: v for k, v in _result_values(answer).items()})
                        retry_answered.append(row)
            elif kind == "result":
                r: AttemptResult = merged.get((payload.slot, payload.attempt)) or storable_result(
                    payload
                )
                if (r.slot, r.attempt) not in merged:
                    results.append({"k_batch": bid, "k_slot": r.slot, "k_attempt": r.attempt})
                    results[-1].update(_result_values(r))
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
            await conn.execute(_PLAN_INSERT, planned)
        for job in jobs:
            await conn.execute(insert(T_JOBS), [job.row()])
            await conn.execute(insert(T_JOB_REQUESTS), job.request_rows())
        first = [(_SENT_UPDATE, sent_first), (_SENT_RESULT_UPDATE, sent_answered)]
        for statement, rows in first:
            if not rows:
                continue
            done = await conn.execute(statement, rows)
            counted = conn.dialect.supports_sane_multi_rowcount
            if not counted or done.rowcount != len(rows):
                await _check_first_sent(conn, bid, rows)
                if counted:  # a short count the read-back could not place
                    raise StorageError(
                        f"batch {bid}: {len(rows) - done.rowcount} call(s) about to be sent "
                        "for comparisons not stored as planned; nothing of the group was written"
                    )
        for rows in (sent_retry, retry_answered):
            if rows:
                await conn.execute(insert(T_COMPARISONS), rows)
        if results:
            await conn.execute(_RESULT_UPDATE, results)
        if set_status:
            await conn.execute(_STATUS_UPDATE, set_status)
        if cache_rows:
            await _cache_insert(conn, cache_rows)
        if released:
            await conn.execute(_RELEASE_UPDATE, released)
        if wave_ends:
            # several waves closed since the last commit: their rows, and the newest state
            # (each wave's state supersedes the one before)
            await write_wave_end(conn, bid, waves=[w for w, _ in wave_ends], state=wave_ends[-1][1])
        if max_call:
            await conn.execute(_CALLS_SENT_UPDATE, {"k_batch": bid, "k_calls": max_call})


_RESULT_FIELDS = (
    "status",
    "received_at",
    "winner",
    "confidence",
    "justification",
    "error_kind",
    "error_message",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "latency_s",
    "cached",
    "cache_source",
)


def _result_values(r: AttemptResult) -> dict[str, Any]:
    """The columns a result writes, as ``v_<column>`` parameters (``r`` is storable)."""
    return {f"v_{name}": getattr(r, name) for name in _RESULT_FIELDS}


_C = T_COMPARISONS.c
_KEY = and_(
    _C.batch_id == bindparam("k_batch"),
    _C.slot == bindparam("k_slot"),
    _C.attempt == bindparam("k_attempt"),
)
# a first call goes out only for its wave's planned (or released) row: any other row is
# left as it is, and the group fails (_check_first_sent)
# (no IN: an expanding parameter cannot go into an executemany)
_PLANNED_KEY = and_(_KEY, or_(_C.status == "planned", _C.status == "released"))
_SENT_UPDATE = (
    update(T_COMPARISONS)
    .where(_PLANNED_KEY)
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
    .values({name: bindparam(f"v_{name}") for name in _RESULT_FIELDS})
)
# a call sent and answered within one group: its ``sent`` values and its result together
# (the status written is the result's)
_SENT_RESULT_UPDATE = (
    update(T_COMPARISONS)
    .where(_PLANNED_KEY)
    .values(
        {
            name: bindparam(f"v_{name}")
            for name in ("call_no", "sent_at", "model", "prompt_hash", *_RESULT_FIELDS)
        }
    )
)
_PLAN_INSERT = insert(T_COMPARISONS)
_CALLS_SENT_UPDATE = (
    update(T_STATE)
    .where(
        and_(
            T_STATE.c.batch_id == bindparam("k_batch"), T_STATE.c.calls_sent < bindparam("k_calls")
        )
    )
    .values(calls_sent=bindparam("k_calls"))
)
_RELEASE_UPDATE = (
    update(T_COMPARISONS)
    .where(
        and_(
            _C.batch_id == bindparam("k_batch"),
            _C.slot == bindparam("k_slot"),
            _C.attempt == 1,
            _C.status == "planned",
        )
    )
    .values(status="released")
)
_STATUS_UPDATE = (
    update(T_COMPARISONS)
    .where(_KEY)
    .values(
        status=bindparam("v_status"),
        received_at=func.coalesce(_C.received_at, bindparam("v_now", type_=_C.received_at.type)),
    )
)


_CHECK_CHUNK = 1000
"""Slots read back per statement: far below SQLite's and asyncpg's bound parameter limits."""


async def _check_first_sent(conn: AsyncConnection, bid: str, rows: list[dict[str, Any]]) -> None:
    """Raise unless every first call of ``rows`` (``k_slot``, ``v_call_no``) is stored on
    its planned row, read back in this transaction.

    The ``UPDATE``s that store them are ``executemany`` statements, whose row counts
    asyncpg does not report (SQLAlchemy's ``supports_sane_multi_rowcount``): on
    PostgreSQL every group is read back; on SQLite only one whose count is short, to
    name the comparison. Each ``call_no`` is new in its batch, so a row that holds it
    was written by this transaction.
    """
    expected = {int(r["k_slot"]): int(r["v_call_no"]) for r in rows}
    slots = sorted(expected)
    stored: dict[int, tuple[int | None, str]] = {}
    for start in range(0, len(slots), _CHECK_CHUNK):
        chunk = slots[start : start + _CHECK_CHUNK]
        found = await conn.execute(
            select(_C.slot, _C.call_no, _C.status).where(
                _C.batch_id == bid, _C.attempt == 1, _C.slot.in_(chunk)
            )
        )
        stored.update({int(s): (c, str(st)) for s, c, st in found})
    for slot in slots:
        call_no, status = stored.get(slot, (None, "not stored"))
        if call_no != expected[slot] or status in ("planned", "released"):
            state = "absent" if slot not in stored else f"stored as {status!r}"
            raise StorageError(
                f"batch {bid}: call {expected[slot]} was about to be sent for comparison "
                f"{slot}, which is not stored as planned ({state}); nothing of its group "
                "was written"
            )
    if len(rows) != len(expected):  # the same comparison twice in one group
        raise StorageError(
            f"batch {bid}: two first calls for one comparison in one group; nothing of it "
            "was written"
        )


def storable_result(r: AttemptResult) -> AttemptResult:
    """``r`` with every text made storable (:mod:`cj_runner.storage.storable`)."""
    return replace(
        r,
        winner=storable_text(r.winner) if r.winner is not None else None,
        justification=storable_justification(r.justification),
        error_kind=storable_text(r.error_kind) if r.error_kind is not None else None,
        error_message=storable_message(r.error_message),
    )


def _unstorable(r: AttemptResult, exc: BaseException) -> AttemptResult:
    """The row stored instead of a result the database refused."""
    detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    return AttemptResult(
        slot=r.slot,
        attempt=r.attempt,
        status="failed",
        received_at=r.received_at,
        error_kind="unstorable",
        error_message=f"the answer could not be stored ({type(exc).__name__}: {detail})",
        latency_s=r.latency_s,
    )


def _storage_error(exc: BaseException) -> BaseException:
    if isinstance(exc, CJError):
        return exc
    detail = getattr(exc, "orig", None) or exc
    return StorageError(f"cannot write to the database: {type(exc).__name__}: {detail}")


def _fail_all(batch: list[tuple[str, Any, asyncio.Future[None]]], exc: BaseException) -> None:
    for _, _, fut in batch:
        if fut.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            fut.cancel()
        else:
            fut.set_exception(_storage_error(exc))


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


_SQLITE_CACHE_INSERT = sqlite_insert(T_CACHE).on_conflict_do_nothing()
_PG_CACHE_INSERT = pg_insert(T_CACHE).on_conflict_do_nothing()


async def _cache_insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Add answers to the judgment cache; an answer already cached is kept."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        await conn.execute(_SQLITE_CACHE_INSERT, rows)
    elif dialect == "postgresql":
        await conn.execute(_PG_CACHE_INSERT, rows)
    else:  # pragma: no cover - other databases: check first
        for values in rows:
            exists = await conn.execute(
                select(T_CACHE.c.id).where(T_CACHE.c.request_key == values["request_key"])
            )
            if exists.first() is None:
                await conn.execute(insert(T_CACHE).values(**values))
