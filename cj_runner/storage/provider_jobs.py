"""Provider batch jobs on disk (batch-API mode, issue 16): what was (or is about to be)
submitted, under which ids, and which comparison attempt each request answers.

A job is written together with the ``sent`` rows of its requests (one transaction, see
:meth:`~cj_runner.storage.recorder.Recorder.job`) before anything goes out; its input file
id, the moment its create request may leave (``submitting``) and its provider job id are
stored as soon as they are known. Attempts of a job that has not ended stay ``sent`` on a
resume (:func:`~cj_runner.storage.attempts.mark_in_flight_lost` leaves them): their
answers are still coming.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, func, select, update

from cj_runner.storage.engine import Store
from cj_runner.storage.locks import fence
from cj_runner.storage.schema import ProviderJobRequestRow, ProviderJobRow

T_JOBS = cast(Table, ProviderJobRow.__table__)
T_JOB_REQUESTS = cast(Table, ProviderJobRequestRow.__table__)

JOB_STATES = ("prepared", "uploaded", "submitting", "submitted", "ended")


@dataclass(frozen=True)
class JobRequest:
    """One request of a job."""

    custom_id: str
    slot: int
    attempt: int
    judge_attempt: int
    body: dict[str, Any]


@dataclass
class JobRecord:
    """A provider job as stored."""

    job_key: str
    batch_id: str
    job_no: int
    wave: int
    provider: str
    state: str
    created_at: datetime
    input_file_id: str | None = None
    provider_job_id: str | None = None
    provider_status: str | None = None
    counts: dict[str, Any] | None = None
    submitting_at: datetime | None = None
    requests: list[JobRequest] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The ``provider_jobs`` row."""
        return {
            "job_key": self.job_key,
            "batch_id": self.batch_id,
            "job_no": self.job_no,
            "wave": self.wave,
            "provider": self.provider,
            "state": self.state,
            "input_file_id": self.input_file_id,
            "provider_job_id": self.provider_job_id,
            "provider_status": self.provider_status,
            "counts_json": self.counts,
            "created_at": self.created_at,
            "submitting_at": self.submitting_at,
        }

    def request_rows(self) -> list[dict[str, Any]]:
        """The ``provider_job_requests`` rows."""
        return [
            {
                "job_key": self.job_key,
                "custom_id": r.custom_id,
                "slot": r.slot,
                "attempt": r.attempt,
                "judge_attempt": r.judge_attempt,
                "body": json.dumps(r.body, sort_keys=True, ensure_ascii=False),
            }
            for r in self.requests
        ]


async def load_jobs(store: Store, batch_id: str, *, live_only: bool = True) -> list[JobRecord]:
    """The batch's jobs (those not ended, with ``live_only``) with their requests, oldest
    first."""
    query = select(T_JOBS).where(T_JOBS.c.batch_id == batch_id)
    if live_only:
        query = query.where(T_JOBS.c.state != "ended")
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query.order_by(T_JOBS.c.job_no))).all()
        jobs = [
            JobRecord(
                job_key=r.job_key,
                batch_id=r.batch_id,
                job_no=r.job_no,
                wave=r.wave,
                provider=r.provider,
                state=r.state,
                created_at=r.created_at,
                input_file_id=r.input_file_id,
                provider_job_id=r.provider_job_id,
                provider_status=r.provider_status,
                counts=r.counts_json,
                submitting_at=r.submitting_at,
            )
            for r in rows
        ]
        for job in jobs:
            requests = (
                await conn.execute(
                    select(T_JOB_REQUESTS)
                    .where(T_JOB_REQUESTS.c.job_key == job.job_key)
                    .order_by(T_JOB_REQUESTS.c.id)
                )
            ).all()
            job.requests = [
                JobRequest(r.custom_id, r.slot, r.attempt, r.judge_attempt, json.loads(r.body))
                for r in requests
            ]
    return jobs


async def next_job_no(store: Store, batch_id: str) -> int:
    """The number of the batch's next job (1 for the first)."""
    async with store.engine.connect() as conn:
        top = await conn.scalar(
            select(func.max(T_JOBS.c.job_no)).where(T_JOBS.c.batch_id == batch_id)
        )
    return int(top or 0) + 1


async def set_job(store: Store, job: JobRecord, owner: str | None, **values: Any) -> None:
    """Store new values of a job (``state``, ids, status, counts, times) and set them on
    ``job``; with ``owner``, only while that process holds the batch's lock."""
    columns = {("counts_json" if k == "counts" else k): v for k, v in values.items()}
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, job.batch_id, owner)
        await conn.execute(
            update(T_JOBS)
            .where(and_(T_JOBS.c.job_key == job.job_key, T_JOBS.c.batch_id == job.batch_id))
            .values(**columns)
        )
    for key, value in values.items():
        setattr(job, key, value)


async def job_summary(store: Store, batch_id: str) -> dict[str, Any]:
    """How many provider jobs the batch submitted and their states (for summaries)."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(T_JOBS.c.state, func.count())
                .where(T_JOBS.c.batch_id == batch_id)
                .group_by(T_JOBS.c.state)
            )
        ).all()
    return {str(state): int(n) for state, n in rows}
