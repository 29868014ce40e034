"""One group commit's writes: the recorder's queued writes of a batch as a few
``executemany`` statements, and the checks that every call sent is stored as planned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import StorageError
from cj_runner.storage.call_records import AttemptResult, SentAttempt, storable_result
from cj_runner.storage.marks import write_marks
from cj_runner.storage.provider_jobs import T_JOB_REQUESTS, T_JOBS, JobRecord
from cj_runner.storage.tables import T_CACHE, T_COMPARISONS, T_STATE, utcnow
from cj_runner.storage.wave_ends import write_wave_end


async def write_group(
    conn: AsyncConnection, bid: str, batch: Sequence[tuple[str, Any, Any]]
) -> None:
    """Write one group of batch ``bid``'s queued writes (``(kind, payload, future)``
    entries of the :class:`~cj_runner.storage.recorder.Recorder`): a few ``executemany``
    statements, whatever its size.

    Within a group the order of kinds does not matter: a caller awaits the commit of a
    call's ``sent`` row before it can queue that call's result, and a wave's ``plan``
    before any of its calls.
    """
    planned: list[dict[str, Any]] = []
    sent_first: list[dict[str, Any]] = []
    sent_retry: list[dict[str, Any]] = []
    sent_answered: list[dict[str, Any]] = []
    retry_answered: list[dict[str, Any]] = []
    # by call: a result queued twice is written once, the later one (as an executemany would)
    results: dict[tuple[int, int], dict[str, Any]] = {}
    cache_rows: list[dict[str, Any]] = []
    marks: dict[str, list[tuple[int, int]]] = {"cancelled": [], "failed": []}
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
                results[(r.slot, r.attempt)] = {
                    "k_batch": bid,
                    "k_slot": r.slot,
                    "k_attempt": r.attempt,
                    **_result_values(r),
                }
            if r.cache_key is not None and r.status == "success" and not r.cached:
                cache_rows.append(_cache_row(r, bid))
        elif kind in ("mark_failed", "cancel"):
            marks["failed" if kind == "mark_failed" else "cancelled"].append(payload)
    if planned:
        await conn.execute(_PLAN_INSERT, planned)
    for job in jobs:
        await conn.execute(insert(T_JOBS), [job.row()])
        await conn.execute(insert(T_JOB_REQUESTS), job.request_rows())
    for kind, rows in (("sent", sent_first), ("sent_result", sent_answered)):
        if not rows:
            continue
        stored = await _store(conn, bid, kind, rows)
        if stored != len(rows):  # short, or not known (None)
            await _check_first_sent(conn, bid, rows)  # raises, naming the comparison
            if stored is not None:  # a short count the read-back could not place
                raise StorageError(
                    f"batch {bid}: {len(rows) - stored} call(s) about to be sent for "
                    "comparisons not stored as planned; nothing of the group was written"
                )
    for rows in (sent_retry, retry_answered):
        if rows:
            await conn.execute(insert(T_COMPARISONS), rows)
    if results:
        rows = list(results.values())
        stored = await _store(conn, bid, "result", rows)
        if stored != len(rows):  # short, or not known (None)
            await _check_answered(conn, bid, rows)  # raises, naming the call
            if stored is not None:
                raise StorageError(
                    f"batch {bid}: {len(rows) - stored} answer(s) without a stored call to "
                    "go to; nothing of the group was written"
                )
    for status, keys in marks.items():
        if keys:  # only over a planned (cancel) or retried/lost (fail) row, checked
            await write_marks(conn, bid, status, keys, utcnow())
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
# left as it is, and the group fails (write_group)
# (no IN: an expanding parameter cannot go into an executemany)
_PLANNED_KEY = and_(_KEY, or_(_C.status == "planned", _C.status == "released"))
_SENT_COLUMNS: tuple[str, ...] = ("status", "call_no", "sent_at", "model", "prompt_hash")
_SENT_UPDATE = (
    update(T_COMPARISONS)
    .where(_PLANNED_KEY)
    .values({name: bindparam(f"v_{name}") for name in _SENT_COLUMNS})
)
_RESULT_UPDATE = (
    update(T_COMPARISONS)
    .where(_KEY)
    .values({name: bindparam(f"v_{name}") for name in _RESULT_FIELDS})
)
# a call sent and answered within one group: its ``sent`` values and its result together
# (the status written is the result's)
_SENT_RESULT_COLUMNS: tuple[str, ...] = (
    "call_no",
    "sent_at",
    "model",
    "prompt_hash",
    *_RESULT_FIELDS,
)
_SENT_RESULT_UPDATE = (
    update(T_COMPARISONS)
    .where(_PLANNED_KEY)
    .values({name: bindparam(f"v_{name}") for name in _SENT_RESULT_COLUMNS})
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


def _pg_update(columns: tuple[str, ...], *, first: bool) -> Any:
    """PostgreSQL: the calls of a group as one ``UPDATE ... FROM unnest(...)``, one array
    parameter per column (whatever the group's size), so that its row count is reported
    (asyncpg reports none for an ``executemany``). ``first``: first calls, on their
    planned rows (by slot); else by slot and attempt."""
    keys = ("slot",) if first else ("slot", "attempt")
    values = (
        func.unnest(
            *(bindparam(f"a_{key}", type_=ARRAY(Integer)) for key in keys),
            *(bindparam(f"a_{name}", type_=ARRAY(_C[name].type)) for name in columns),
        )
        .table_valued(*keys, *columns)
        .render_derived()
    )
    if first:
        where = [_C.attempt == 1, or_(_C.status == "planned", _C.status == "released")]
    else:
        where = [_C.attempt == values.c.attempt]
    return (
        update(T_COMPARISONS)
        .where(_C.batch_id == bindparam("k_batch"), _C.slot == values.c.slot, *where)
        .values({name: values.c[name] for name in columns})
    )


_COLUMNS = {"sent": _SENT_COLUMNS, "sent_result": _SENT_RESULT_COLUMNS, "result": _RESULT_FIELDS}
_UPDATES = {"sent": _SENT_UPDATE, "sent_result": _SENT_RESULT_UPDATE, "result": _RESULT_UPDATE}
_PG_UPDATES = {kind: _pg_update(cols, first=kind != "result") for kind, cols in _COLUMNS.items()}


async def _store(
    conn: AsyncConnection, bid: str, kind: str, rows: list[dict[str, Any]]
) -> int | None:
    """Write ``rows`` (``k_slot``, ``k_attempt`` and ``v_<column>``) as ``kind``: first
    calls (``sent``, ``sent_result``: on their planned rows) or results (``result``: on
    their calls' rows); returns how many rows were written, ``None`` when the database
    cannot tell.

    SQLite reports the row count of an ``executemany``; asyncpg does not (SQLAlchemy's
    ``supports_sane_multi_rowcount``), so PostgreSQL writes them with one statement,
    whose count it reports.
    """
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {"k_batch": bid, "a_slot": [r["k_slot"] for r in rows]}
        if kind == "result":
            params["a_attempt"] = [r["k_attempt"] for r in rows]
        params.update({f"a_{name}": [r[f"v_{name}"] for r in rows] for name in _COLUMNS[kind]})
        done = await conn.execute(_PG_UPDATES[kind], params)
        return int(done.rowcount)
    done = await conn.execute(_UPDATES[kind], rows)
    if conn.dialect.supports_sane_multi_rowcount:
        return int(done.rowcount)
    return None  # pragma: no cover - other databases: the read-back decides


READ_BACK_CHUNK = 1000
"""Slots read back per statement: far below SQLite's and asyncpg's bound parameter limits."""


async def _check_first_sent(conn: AsyncConnection, bid: str, rows: list[dict[str, Any]]) -> None:
    """Raise unless every first call of ``rows`` (``k_slot``, ``v_call_no``) is stored on
    its planned row, read back in this transaction, naming the first comparison that is
    not (:func:`_store` counts them first). Each ``call_no`` is new in its
    batch, so a row that holds it was written by this transaction.
    """
    expected = {int(r["k_slot"]): int(r["v_call_no"]) for r in rows}
    slots = sorted(expected)
    stored = {s: v for (s, a), v in (await _stored_rows(conn, bid, slots)).items() if a == 1}
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


async def _stored_rows(
    conn: AsyncConnection, bid: str, slots: list[int]
) -> dict[tuple[int, int], tuple[int | None, str]]:
    """(call number, status) of every stored attempt of ``slots``, by (slot, attempt)."""
    stored: dict[tuple[int, int], tuple[int | None, str]] = {}
    for start in range(0, len(slots), READ_BACK_CHUNK):
        chunk = slots[start : start + READ_BACK_CHUNK]
        found = await conn.execute(
            select(_C.slot, _C.attempt, _C.call_no, _C.status).where(
                _C.batch_id == bid, _C.slot.in_(chunk)
            )
        )
        stored.update({(int(s), int(a)): (c, str(st)) for s, a, c, st in found})
    return stored


async def _check_answered(conn: AsyncConnection, bid: str, rows: list[dict[str, Any]]) -> None:
    """Raise unless every result of ``rows`` (``k_slot``, ``k_attempt``) found its call's
    row, naming the first that did not."""
    stored = await _stored_rows(conn, bid, sorted({int(r["k_slot"]) for r in rows}))
    for r in rows:
        key = (int(r["k_slot"]), int(r["k_attempt"]))
        if key not in stored:
            raise StorageError(
                f"batch {bid}: an answer ({r['v_status']}) came for attempt {key[1]} of "
                f"comparison {key[0]}, which is not stored; nothing of its group was written"
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
