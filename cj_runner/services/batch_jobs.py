"""Batch-API mode: a wave's comparisons go out as one provider batch job (issue 16).

The executor hands a wave's comparisons (:class:`~cj_runner.services.calls.Slot`) to a
:class:`JobRunner` instead of asking the judge one call at a time. The runner asks them
through provider jobs (:mod:`cj_runner.judges.batch_api`) until each has an answer, has
failed for good or has no budget left, or the run stops:

1. **On disk first.** The job (its ``job_key``, each request's ``custom_id``, the
   comparison attempt it answers and its body) and the ``sent`` rows of its attempts are
   stored in one transaction before anything goes out; every request is one call against
   the budget, as a synchronous call is.
2. **Upload, submit.** OpenAI's input file id is stored as soon as it is known. The job is
   marked ``submitting`` before its create request leaves, and its provider id is stored
   the moment it is known. A resume that finds a job ``submitting`` without an id looks it
   up by its key (OpenAI: ``metadata``; Anthropic: the listing, see
   :mod:`cj_runner.judges.batch_anthropic`) before it would submit again, so a job is
   never submitted (nor paid) twice.
3. **Poll** (after 0.5 s, then doubling up to every ``batch_poll_s`` seconds), with the
   job's status and counts on the progress display, until the job ends or the run stops
   (Ctrl-C: the job keeps running at the provider; ``cj-run resume`` polls it again; its
   calls stay ``sent``, not lost).
4. **Results.** Each answer is parsed and classified as the synchronous judge would, and
   stored like a synchronous call's (tokens whatever the outcome; the judgment cache).
   Requests that expired, were cancelled or got a retryable error are asked again in the
   next job (each a new call against the budget); only they are: what has an answer is
   never asked again. An expired request does not use up one of
   ``MAX_ATTEMPTS_PER_COMPARISON`` (it is not the judge's failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from cj_runner.errors import JudgeError, JudgeUnavailable
from cj_runner.judges.base import AssignmentText, EssayText, Judge, JudgeRequest, Verdict
from cj_runner.judges.batch_api import BatchAPI, ItemOutcome, JobStatus, no_answer
from cj_runner.judges.retry import RetryPolicy, SleepFn
from cj_runner.services.batch_endpoints import (
    ACCOUNT_REFUSALS,
    ENDPOINT_ATTEMPTS,
    FIRST_POLL_S,
    UNKNOWN_JOB_ATTEMPTS,
    UNKNOWN_JOB_FIRST_WAIT_S,
    EndpointCalls,
    poll_wait,
)
from cj_runner.services.calls import (
    CallBudget,
    CallOutcome,
    CallRunner,
    DoneListener,
    Slot,
    checked_verdict,
)
from cj_runner.storage import Store
from cj_runner.storage import provider_jobs as pj
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import AttemptResult, Recorder, SentAttempt
from cj_runner.storage.storable import valid_token_count

__all__ = [
    "ACCOUNT_REFUSALS",
    "ENDPOINT_ATTEMPTS",
    "FIRST_POLL_S",
    "UNKNOWN_JOB_ATTEMPTS",
    "UNKNOWN_JOB_FIRST_WAIT_S",
    "JobProgress",
    "JobRunner",
    "poll_wait",
]

JobProgress = Callable[[str], None]


class JobRunner(EndpointCalls):
    """Runs a batch run's waves through provider batch jobs (see the module docstring)."""

    def __init__(
        self,
        *,
        api: BatchAPI,
        calls: CallRunner,
        store: Store,
        recorder: Recorder,
        texts: Sequence[EssayText],
        assignment: AssignmentText,
        retry_policy: RetryPolicy,
        budget: CallBudget,
        stop_event: asyncio.Event,
        batch_id: str,
        owner: str | None,
        poll_s: float,
        on_attempt: Callable[[Slot, AttemptResult], None],
        on_done: DoneListener,
        on_progress: JobProgress,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        self.api = api
        self.calls = calls  # for the judgment cache (lookups and cached answers)
        self.judge: Judge = calls.judge
        self.store = store
        self.recorder = recorder
        self.texts = texts
        self.assignment = assignment
        self.retry_policy = retry_policy
        self.budget = budget
        self.stop_event = stop_event
        self.batch_id = batch_id
        self.owner = owner
        self.poll_s = poll_s
        self.on_attempt = on_attempt
        self.on_done = on_done
        self.on_progress = on_progress
        self.sleep = sleep  # the waits between batch-endpoint attempts (tests inject it)
        #: the error that made the judge unusable; set, no new job is sent
        self.fatal: JudgeError | None = None
        #: set when the batch endpoints kept failing: the run stops (resumable)
        self.stalled: str | None = None
        #: comparisons left ``sent`` in provider jobs that have not ended when the judge
        #: turned unusable (their answers may still come: ``cj-run resume`` collects them)
        self.outstanding = 0
        #: the calls of a stored job the provider does not know (the run stopped on it)
        self.unknown_job_calls: int | None = None
        self.jobs_submitted = 0

    # ------------------------------------------------------------ the wave

    async def run(self, wave_no: int, slots: Sequence[Slot]) -> None:
        """Ask ``slots`` through provider jobs until each ends or the run stops."""
        pending = {s.slot: s for s in slots}
        jobs = await pj.load_jobs(self.store, self.batch_id)
        for job in jobs:
            if self._stopping():
                break
            await self._finish(job, pending)
        while pending and not self._stopping():
            new = await self._new_job(wave_no, pending)
            if new is None:
                break
            jobs.append(new)
            await self._finish(new, pending)
        if self.fatal is not None:
            await self._end_for_unusable_judge(pending, jobs)

    async def _end_for_unusable_judge(
        self, pending: dict[int, Slot], jobs: Sequence[pj.JobRecord]
    ) -> None:
        """The judge cannot answer: what is left ends now (nothing more is sent), except a
        call inside a provider job that has not ended: it stays ``sent`` (paid, its answer
        may still come; ``cj-run resume`` collects it) and the run stops, resumable."""
        held = {(r.slot, r.attempt) for job in jobs if job.state != "ended" for r in job.requests}
        for slot in sorted(pending.values(), key=lambda s: s.slot):
            if (slot.slot, slot.next_attempt) in held:
                self.outstanding += 1
            else:
                await self._end_unsent(slot)
        pending.clear()
        if self.outstanding and self.stalled is None:
            # the wave cannot close before those answers: stop here, resumable
            assert self.fatal is not None
            self.stalled = self.fatal.message

    async def _end_unsent(self, slot: Slot) -> None:
        if slot.next_attempt == 1 and slot.planned_row:
            await self.recorder.cancel(slot.slot, 1)
            self.on_done(slot, CallOutcome("cancelled", 1))
        else:
            await self.recorder.mark_failed(slot.slot, slot.next_attempt - 1)
            self.on_done(slot, CallOutcome("failed", slot.next_attempt - 1))

    async def _new_job(self, wave_no: int, pending: dict[int, Slot]) -> pj.JobRecord | None:
        """Store a new job for the comparisons still to ask (cache hits are answered from
        the cache; those without budget end); ``None`` when nothing is left to send."""
        job_no = await pj.next_job_no(self.store, self.batch_id)
        job_key = f"cj-{self.batch_id}-j{job_no}"
        requests: list[pj.JobRequest] = []
        sent: list[SentAttempt] = []
        cache = self.calls.cache
        for slot in sorted(pending.values(), key=lambda s: s.slot):
            if self.fatal is not None or self.budget.calls_sent >= self.budget.total_budget:
                await self._end_unsent(slot)
                del pending[slot.slot]
                continue
            if cache is not None and slot.next_attempt == 1:
                key = self.calls._cache_key(slot)
                if key is not None and key in cache:
                    await self.calls._record_cached(slot, cache[key])
                    del pending[slot.slot]
                    continue
            call_no = self.budget.count_call()
            request = JudgeRequest(
                essay_a=self.texts[slot.a],
                essay_b=self.texts[slot.b],
                assignment=self.assignment,
                attempt=slot.judge_attempt,
                repeat_index=slot.repeat_index,
                ask_index=slot.ask_index,
                after_truncation=slot.truncations > 0,
                judge=slot.judge,
            )
            custom_id = self.api.custom_id(job_key, slot.slot, slot.next_attempt)
            requests.append(
                pj.JobRequest(
                    custom_id,
                    slot.slot,
                    slot.next_attempt,
                    slot.judge_attempt,
                    self.api.body(request),
                )
            )
            sent.append(self.calls.sent_attempt(slot, slot.next_attempt, call_no))
        if not requests:
            return None
        job = pj.JobRecord(
            job_key=job_key,
            batch_id=self.batch_id,
            job_no=job_no,
            wave=wave_no,
            provider=self.api.provider,
            state="prepared",
            created_at=repo.utcnow(),
            requests=requests,
        )
        await self.recorder.job(job, sent)
        self.on_progress(f"job {job_no}: {len(requests)} requests stored")
        return job

    # ------------------------------------------------------------ one job

    async def _finish(self, job: pj.JobRecord, pending: dict[int, Slot]) -> None:
        """Take ``job`` from wherever it stands to its stored answers (or until the run
        stops)."""
        items = [(r.custom_id, r.body) for r in job.requests]
        if job.state == "prepared" and not await self._upload(job, items):
            return
        if job.state == "submitting" and job.provider_job_id is None:
            found = await self._endpoint(
                lambda: self.api.find(job.job_key, len(items), job.submitting_at or job.created_at),
                f"job {job.job_no}: looking for a submitted job",
            )
            if self._stopping():
                return
            if isinstance(found, str):
                await pj.set_job(
                    self.store,
                    job,
                    self.owner,
                    state="submitted",
                    provider_job_id=found,
                    submitted_at=repo.utcnow(),
                )
                self.on_progress(f"job {job.job_no}: found {found} (submitted before)")
            else:
                job.state = "uploaded"  # it never arrived: submit it now
        if job.state == "uploaded" and not await self._submit(job, items, pending):
            return
        status = await self._poll(job)
        if status is None:
            return
        await self._collect(job, status, pending)

    async def _upload(self, job: pj.JobRecord, items: list[tuple[str, dict[str, Any]]]) -> bool:
        file_id = await self._endpoint(
            lambda: self.api.upload(job.job_key, items), f"job {job.job_no}: uploading"
        )
        if self._stopping():
            return False
        await pj.set_job(
            self.store,
            job,
            self.owner,
            state="uploaded",
            input_file_id=file_id if isinstance(file_id, str) else None,
        )
        if isinstance(file_id, str):
            self.on_progress(f"job {job.job_no}: uploaded {file_id}")
        return True

    async def _submit(
        self,
        job: pj.JobRecord,
        items: list[tuple[str, dict[str, Any]]],
        pending: dict[int, Slot],
    ) -> bool:
        for round_no in range(ENDPOINT_ATTEMPTS):
            if self._stopping():
                return False
            # stored before the create request leaves: a resume looks before it sends
            await pj.set_job(
                self.store, job, self.owner, state="submitting", submitting_at=repo.utcnow()
            )
            try:
                job_id, status = await self.api.submit(job.job_key, items, job.input_file_id)
            except JudgeUnavailable as error:
                await self._fail_job(job, error, pending)
                return False
            except JudgeError as error:
                # the create may have arrived although its answer did not: look first
                self.on_progress(f"job {job.job_no}: submitting failed ({error.message})")
                await self._wait(self.retry_policy.max_delay_s if round_no else 1.0)
                found = await self._endpoint(
                    lambda: self.api.find(
                        job.job_key, len(items), job.submitting_at or job.created_at
                    ),
                    f"job {job.job_no}: looking for a submitted job",
                )
                if isinstance(found, str):
                    job_id, status = found, JobStatus("submitted", False)
                else:
                    continue
            await pj.set_job(
                self.store,
                job,
                self.owner,
                state="submitted",
                provider_job_id=job_id,
                provider_status=status.status,
                counts=status.counts,
                submitted_at=repo.utcnow(),
            )
            self.jobs_submitted += 1
            self.on_progress(f"job {job.job_no}: submitted {job_id} ({len(items)} requests)")
            return True
        self.stalled = f"job {job.job_no}: the batch endpoint kept failing"
        return False

    async def _poll(self, job: pj.JobRecord) -> JobStatus | None:
        assert job.provider_job_id is not None
        job_id = job.provider_job_id
        polls = 0
        while True:
            status = await self._endpoint(
                lambda: self.api.status(job_id),
                f"job {job.job_no}: polling",
                job_calls=len(job.requests),
            )
            if self._stopping() or not isinstance(status, JobStatus):
                return None
            if status.status != job.provider_status or status.counts != job.counts:
                await pj.set_job(
                    self.store,
                    job,
                    self.owner,
                    provider_status=status.status,
                    counts=status.counts,
                )
            self.on_progress(f"job {job.job_no} {job_id}: {status.describe()}")
            if status.ended:
                return status
            # soon after the submission first (small jobs end fast), then every poll_s
            await self._wait(poll_wait(self.poll_s, polls))
            polls += 1
            if self._stopping():
                return None

    async def _collect(
        self, job: pj.JobRecord, status: JobStatus, pending: dict[int, Slot]
    ) -> None:
        """Store every answer of an ended job; mark it ended."""
        assert job.provider_job_id is not None
        job_id = job.provider_job_id
        bodies = {r.custom_id: r.body for r in job.requests}
        results: dict[str, ItemOutcome] = {}
        if status.failure is None:
            got = await self._endpoint(
                lambda: self.api.results(job_id, bodies),
                f"job {job.job_no}: reading results",
                job_calls=len(job.requests),
            )
            if self._stopping() or not isinstance(got, dict):
                return
            results = got
        for request in job.requests:
            slot = pending.get(request.slot)
            if slot is None or slot.next_attempt != request.attempt:
                continue  # answered already (a run that stopped while storing this job)
            outcome = results.get(request.custom_id)
            if outcome is None:
                outcome = (
                    JudgeUnavailable("bad_request", f"judge {self.judge.name}: {status.failure}")
                    if status.failure is not None
                    else no_answer(self.judge.name, f"no answer in batch job {job_id}")
                )
            if await self._store_outcome(slot, request, outcome):
                del pending[slot.slot]
        await self.recorder.flush()
        await pj.set_job(self.store, job, self.owner, state="ended", ended_at=repo.utcnow())

    async def _fail_job(
        self, job: pj.JobRecord, error: JudgeUnavailable, pending: dict[int, Slot]
    ) -> None:
        """The job was refused (bad key, no credit...): its calls fail, nothing was billed."""
        self.fatal = error
        for request in job.requests:
            slot = pending.get(request.slot)
            if slot is None or slot.next_attempt != request.attempt:
                continue
            result = AttemptResult(
                slot=request.slot,
                attempt=request.attempt,
                status="failed",
                received_at=repo.utcnow(),
                error_kind=error.kind,
                error_message=error.message,
            )
            await self.recorder.result(result)
            self.on_attempt(slot, result)
            self.on_done(slot, CallOutcome("failed", request.attempt))
            del pending[slot.slot]
        await self.recorder.flush()
        await pj.set_job(self.store, job, self.owner, state="ended", ended_at=repo.utcnow())

    async def _store_outcome(
        self, slot: Slot, request: pj.JobRequest, outcome: ItemOutcome
    ) -> bool:
        """Store one request's answer; ``True`` when its comparison ended."""
        if isinstance(outcome, Verdict):
            try:
                verdict = checked_verdict(outcome)
            except JudgeError as bad_usage:
                outcome = bad_usage
            else:
                await self._store_success(slot, request.attempt, verdict)
                return True
        error = outcome
        if isinstance(error, JudgeUnavailable) and self.fatal is None:
            self.fatal = error
        budget_left = self.budget.calls_sent < self.budget.total_budget
        expired = error.kind == "expired"
        truncations = slot.truncations + (1 if error.kind == "truncated" else 0)
        if isinstance(error, JudgeUnavailable):
            retry = False
        elif expired:
            retry = budget_left
        elif error.kind == "truncated":
            retry = (
                truncations == 1
                and slot.judge_attempt < self.retry_policy.max_attempts
                and budget_left
            )
        else:
            retry = (
                error.transient
                and slot.judge_attempt < self.retry_policy.max_attempts
                and budget_left
            )
        usage = error.usage
        if usage is not None and not all(
            valid_token_count(n) for n in (usage.tokens_in, usage.tokens_out, usage.tokens_cached)
        ):
            usage = None
        result = AttemptResult(
            slot=slot.slot,
            attempt=request.attempt,
            status="retried" if retry else "failed",
            received_at=repo.utcnow(),
            error_kind=error.kind,
            error_message=error.message,
            tokens_in=usage.tokens_in if usage is not None else None,
            tokens_out=usage.tokens_out if usage is not None else None,
            tokens_cached=usage.tokens_cached if usage is not None else None,
        )
        await self.recorder.result(result)
        self.on_attempt(slot, result)
        if not retry:
            self.on_done(slot, CallOutcome("failed", request.attempt))
            return True
        slot.next_attempt = request.attempt + 1
        slot.planned_row = False
        slot.truncations = truncations
        if not expired:
            slot.judge_attempt += 1
        return False

    async def _store_success(self, slot: Slot, attempt: int, verdict: Verdict) -> None:
        cache_key = self.calls._cache_key(slot)
        await self.calls.store_success(slot, attempt, verdict, verdict.latency_s, cache_key)
        self.on_done(slot, CallOutcome("success", attempt, verdict))
