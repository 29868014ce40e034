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

The records written are :mod:`~cj_runner.storage.call_records`; the statements of one
group, and the check that every call sent is stored on its planned row,
:mod:`~cj_runner.storage.group_writes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import CJError, StorageError
from cj_runner.storage.call_records import (
    AttemptResult,
    CacheKey,
    PlannedRow,
    SentAttempt,
    UnstorableAnswer,
    storable_result,
)
from cj_runner.storage.engine import Store
from cj_runner.storage.group_writes import write_group
from cj_runner.storage.locks import fence
from cj_runner.storage.provider_jobs import JobRecord

__all__ = [
    "IDLE_WINDOW_S",
    "AttemptResult",
    "CacheKey",
    "PlannedRow",
    "Recorder",
    "SentAttempt",
    "UnstorableAnswer",
    "storable_result",
]

IDLE_WINDOW_S = 0.002
"""Group-commit window while no judge call is in flight (a zero-latency judge, the last
answers of a wave): long enough for the writes of the same burst (a wave's answers, the
next plan) to share a transaction, short enough not to stall the batch. Measured at 2,000
essays with a zero-latency judge: 830 calls/s with the full 10 ms, ~930 committing at
once (2.6 times the transactions), ~1,090 with 2 ms."""


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
                await write_group(conn, self._batch_id, batch)
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
