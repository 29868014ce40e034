"""`cj-run resume`: nothing answered is lost, nothing is paid twice, and a resumed batch
asks what an uninterrupted one asks.

Three layers:

* in-process "crashes" at chosen points of the wave loop (an exception that stands for the
  process dying), then a resume, compared with an uninterrupted run of the same seed; on
  SQLite and, when ``CJ_TEST_POSTGRES_URL`` is set, PostgreSQL;
* real processes: ``resume --json`` after a SIGKILL prints the ``execute --json`` summary;
  a second live process on the same batch is refused, a dead one's lock is taken over;
* the crash test: SIGKILL at 20+ random points of a whole run (``benchmarks/crash_resume.py``
  runs more rounds).
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from benchmarks.crash_resume import Launcher, Snapshot, check_invariants, crash_round, snapshot
from cj_runner.config import settings_from_stored
from cj_runner.judges.base import Judge, JudgeRequest, Verdict
from cj_runner.judges.registry import build_judge
from cj_runner.services.batches import (
    RunRequest,
    create_batch,
    plan_summary,
    prepare,
    stored_judge_config,
)
from cj_runner.services.executor import BatchExecutor, RunResult
from cj_runner.storage import Store, open_store, resolve_db_url
from cj_runner.storage import repository as repo
from tests.cli.helpers import LOWER5, REGULAR24, run, write_profile
from tests.hostile_server import PATIENCE_S, HostileServer, Reply, answer_body, winner_of

SEED = 21
SETTINGS: dict[str, Any] = {
    "MAX_PAIRWISE_COMPARISONS": 400,  # does not bind: the run stops at its resampling cap
    "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 12,
    "SCORE_STABILITY_THRESHOLD": 0.0,
    "MAX_ITERATIONS": 500,
    "MAX_CONCURRENT_REQUESTS": 4,
    "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH": 1,
    "RETRY_BASE_DELAY_S": 0.0,
    "RETRY_MAX_DELAY_S": 0.0,
    "USE_ANCHORS": False,
    "SEED": SEED,
}
JUDGE: dict[str, Any] = {
    "kind": "mock",
    "seed": SEED,
    "noise": 1.0,
    "position_bias": 0.05,
    "latency": {"distribution": "fixed", "median_ms": 1},
    "errors": {"timeout": 0.05, "server_error": 0.03, "malformed": 0.02},
}


def twelve_essays(folder: Path) -> Path:
    """The first 12 essays of the regular example (66 edges: a regular batch)."""
    folder.mkdir(parents=True, exist_ok=True)
    with REGULAR24.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:12]
    out = folder / "twelve.csv"
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["essay_id", "text", "true_score"])
        for row in rows:
            body = (REGULAR24.parent / row["path"]).read_text(encoding="utf-8")
            writer.writerow([row["essay_id"], body, row["true_score"]])
    return out


EARLIER_WAVE_GUARD_S = 5.0


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class CrashingJudge:
    """The batch's judge, until call number ``at_call``: that call never returns."""

    def __init__(self, inner: Judge, at_call: int) -> None:
        self.inner = inner
        self.at_call = at_call
        self.calls = 0
        self.crashing = asyncio.Event()
        self.name, self.model, self.prompt_hash = inner.name, inner.model, inner.prompt_hash
        self.price_input_per_mtok = inner.price_input_per_mtok
        self.price_output_per_mtok = inner.price_output_per_mtok
        # a mock with no error rates cannot fail: the budget plans one call per comparison
        self.retries_possible = getattr(inner, "retries_possible", True)

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        number = self.calls
        if number == self.at_call:
            self.crashing.set()
            await asyncio.sleep(0)
            raise Crash(f"died during call {number}")
        if number > self.at_call:  # went out as the dying call did: never answered
            await asyncio.Event().wait()
        if number >= self.at_call - 3:
            # still in flight at the crash, however slow the machine: wait for the dying
            # call to go out, then never answer (the crash cancels these). A call of an
            # earlier wave (the dying call waits for that wave to end) answers after the
            # guard instead; nothing asserts on those. (``asyncio.timeout``, not
            # ``wait_for``: on Python 3.11 ``wait_for`` can swallow the cancellation.)
            try:
                async with asyncio.timeout(EARLIER_WAVE_GUARD_S):
                    await self.crashing.wait()
            except TimeoutError:
                return await self.inner.judge(request)
            await asyncio.Event().wait()
        return await self.inner.judge(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class StoppingJudge(CrashingJudge):
    """The batch's judge; call number ``at_call`` sets ``stop`` (Ctrl-C) and answers."""

    def __init__(self, inner: Judge, at_call: int, stop: asyncio.Event) -> None:
        super().__init__(inner, at_call)
        self.stop = stop

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        if self.calls == self.at_call:
            self.stop.set()
        return await self.inner.judge(request)


def crash_in(method: str, wave: int | None = None) -> type[BatchExecutor]:
    """An executor that dies on entering ``method`` (for wave ``wave``)."""

    class Dying(BatchExecutor):
        pass

    original = getattr(BatchExecutor, method)

    async def dying(self: BatchExecutor, *args: Any) -> Any:
        if wave is None or args[0] == wave:
            raise Crash(f"died in {method}")
        return await original(self, *args)

    setattr(Dying, method, dying)
    return Dying


async def new_batch(store: Store, inventory: Path, profile: Path, name: str) -> str:
    request = RunRequest(inventory=inventory, profile=str(profile), batch_name=name)
    prepared = await prepare(store, request)
    return await create_batch(store, prepared, plan_summary(prepared))


async def run_batch(
    store: Store,
    batch_id: str,
    *,
    executor: type[BatchExecutor] = BatchExecutor,
    crash_at_call: int | None = None,
    stop_event: asyncio.Event | None = None,
    stop_at_call: int | None = None,
    wrap: Callable[[Judge], Any] | None = None,
) -> RunResult:
    batch = await repo.find_batch(store, batch_id)
    judge: Any = build_judge(stored_judge_config(batch))
    if wrap is not None:
        judge = wrap(judge)
    if crash_at_call is not None:
        judge = CrashingJudge(judge, crash_at_call)
    if stop_at_call is not None:
        assert stop_event is not None
        judge = StoppingJudge(judge, stop_at_call, stop_event)
    runner = executor(
        store,
        batch,
        await repo.load_nodes(store, batch_id),
        judge,
        settings_from_stored(batch.settings),
        use_cache=False,
        stop_event=stop_event,
    )
    try:
        return await runner.run()
    finally:
        await judge.aclose()


async def answers(store: Store, batch_id: str) -> Counter[tuple[Any, ...]]:
    """``(a, b, mode, wave, winner)`` of every answered comparison."""
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT a_idx, b_idx, mode, wave, winner FROM comparisons "
                "WHERE batch_id = :b AND status = 'success'"
            ),
            {"b": batch_id},
        )
        return Counter(tuple(r) for r in rows)


async def ledger(store: Store, batch_id: str) -> dict[str, Any]:
    """Call numbers, statuses and per-slot answers, for the invariants."""
    attempts = await repo.load_attempts(store, batch_id)
    batch = await repo.find_batch(store, batch_id)
    calls = sorted(r["call_no"] for r in attempts if r["call_no"] is not None)
    return {
        "calls": calls,
        "calls_sent": batch.state["calls_sent"],
        "budget": batch.state["total_budget"],
        "status": batch.status,
        "stop_reason": batch.stop_reason,
        "lost": sum(1 for r in attempts if r["error_kind"] == "lost"),
        "in_flight": sum(1 for r in attempts if r["status"] == "sent"),
        "answers_per_slot": Counter(r["slot"] for r in attempts if r["status"] == "success"),
        "waves": batch.state["iteration"],
        "failed": sum(1 for r in attempts if r["status"] == "failed"),
    }


def assert_consistent(book: dict[str, Any]) -> None:
    assert book["calls"] == list(range(1, len(book["calls"]) + 1))
    assert book["calls_sent"] == len(book["calls"]) <= book["budget"]
    assert max(book["answers_per_slot"].values(), default=1) == 1


CRASHES: dict[str, dict[str, Any]] = {
    "calls in flight, coverage": {"crash_at_call": 17},
    "calls in flight, resampling": {"crash_at_call": 110},
    "wave answered, not closed, coverage": {"executor": crash_in("_end_wave", 3)},
    "wave answered, not closed, resampling": {"executor": crash_in("_end_wave", 9)},
    "wave planned, nothing sent": {"executor": crash_in("_send_wave", 8)},
    "last wave closed, not finalized": {"executor": crash_in("_finalize")},
}


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run of the twelve essays with SETTINGS and JUDGE."""

    inventory: Path
    profile: Path
    answers: Counter[tuple[Any, ...]]
    book: dict[str, Any]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Run once per module (the mock judge is deterministic, and the store gives the same
    answers on every backend: tests/storage/test_postgres.py)."""
    folder = tmp_path_factory.mktemp("reference")
    inventory = twelve_essays(folder)
    profile = write_profile(folder / "p.yaml", SETTINGS, JUDGE)

    async def body() -> Reference:
        store = await open_store(resolve_db_url(str(folder / "ref.db")))
        try:
            batch_id = await new_batch(store, inventory, profile, "reference")
            assert (await run_batch(store, batch_id)).status == "COMPLETED"
            return Reference(
                inventory, profile, await answers(store, batch_id), await ledger(store, batch_id)
            )
        finally:
            await store.close()

    return asyncio.run(body())


@pytest.mark.parametrize("crash", list(CRASHES))
async def test_resume_after_a_crash_asks_what_an_uninterrupted_run_asks(
    db_url: str, reference: Reference, crash: str
) -> None:
    store = await open_store(resolve_db_url(db_url))
    try:
        ref_book = reference.book
        crashed = await new_batch(store, reference.inventory, reference.profile, "crashed")
        with pytest.raises(Crash):
            await run_batch(store, crashed, **CRASHES[crash])
        before = await answers(store, crashed)
        book = await ledger(store, crashed)
        assert book["status"] == "RUNNING"
        assert_consistent(book)

        result = await run_batch(store, crashed)  # what `cj-run resume` runs
        assert result.status == "COMPLETED" and result.stop_reason == "resampling_cap"
        after = await answers(store, crashed)
        assert not before - after  # nothing answered before the crash is gone
        assert after == reference.answers  # the same pairs, orientations, waves, winners
        book = await ledger(store, crashed)
        assert_consistent(book)
        assert book["in_flight"] == 0
        assert book["calls_sent"] == ref_book["calls_sent"] + book["lost"]
        assert book["waves"] == ref_book["waves"]
        if "in flight" in crash:
            assert book["lost"] >= 1  # the dying call, and the calls in flight with it
        else:
            # waves are pipelined (spec §5a): while one wave closes or the next is
            # planned, calls of later waves are in flight (at most one per slot), and
            # first calls go out before their sent row commits, so resume counts the
            # released comparisons (fewer than 2 x MAX_CONCURRENT_REQUESTS) as sent
            assert book["lost"] <= 2 * SETTINGS["MAX_CONCURRENT_REQUESTS"]
    finally:
        await store.close()


async def test_interrupt_stores_what_arrived_and_resume_finishes(
    db_url: str, reference: Reference
) -> None:
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await new_batch(store, reference.inventory, reference.profile, "stopped")
        stop = asyncio.Event()
        # Ctrl-C is pressed as call 50 goes out (a rendezvous, not a race with the clock)
        result = await run_batch(store, batch_id, stop_event=stop, stop_at_call=50)
        assert result.status == "INTERRUPTED" and result.interrupted
        book = await ledger(store, batch_id)
        assert book["status"] == "INTERRUPTED" and book["in_flight"] == 0
        assert_consistent(book)
        assert (await repo.lock_holder(store, batch_id))[0] is None  # lock released
        result = await run_batch(store, batch_id)
        assert result.status == "COMPLETED"
        assert await answers(store, batch_id) == reference.answers
    finally:
        await store.close()


class LateSignalJudge(CrashingJudge):
    """Call ``at_call`` answers, and the signal's handler is queued behind its answer: the
    stop is set in the next loop turn, the one where the slot the answer freed is taken up
    (the order a loaded machine gives when the answer and the signal arrive together)."""

    def __init__(self, inner: Judge, at_call: int, stop: asyncio.Event) -> None:
        super().__init__(inner, at_call)
        self.stop = stop
        self.started_after_stop = 0

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        number = self.calls
        if self.stop.is_set():
            self.started_after_stop += 1
        verdict = await self.inner.judge(request)
        if number == self.at_call:
            asyncio.get_running_loop().call_soon(self.stop.set)
        return verdict


async def test_no_call_starts_after_the_interrupt_was_received(
    db_url: str, reference: Reference
) -> None:
    """A signal is a stop at once: a slot freed in the same loop turn sends nothing (it
    sent one or two calls more before, which made tests/cli/test_interrupt.py flaky)."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await new_batch(store, reference.inventory, reference.profile, "late")
        stop = asyncio.Event()
        judges: list[LateSignalJudge] = []

        def late(inner: Judge) -> LateSignalJudge:
            judges.append(LateSignalJudge(inner, 30, stop))
            return judges[0]

        result = await run_batch(store, batch_id, stop_event=stop, wrap=late)
        (judge,) = judges
        assert result.status == "INTERRUPTED"
        assert judge.calls >= 30
        assert judge.started_after_stop == 0
        book = await ledger(store, batch_id)
        assert_consistent(book)
        assert book["in_flight"] == 0
    finally:
        await store.close()


async def test_calls_lost_at_the_end_of_the_budget_are_not_asked_again(
    db_url: str, tmp_path: Path
) -> None:
    """LOWER5 with a budget of 12: 10 coverage calls, then a wave of 2 that dies with both
    calls in flight. Both calls count; there is no budget left to ask them again, so they
    end as failed comparisons (10 of 12 succeeded: above MIN_SUCCESS_RATE)."""
    settings = {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 12, "MIN_RESAMPLING_NET_SIZE": 5}
    judge = {**JUDGE, "errors": {}}
    profile = write_profile(tmp_path / "p.yaml", settings, judge)
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await new_batch(store, LOWER5, profile, "tight")
        with pytest.raises(Crash):
            await run_batch(store, batch_id, crash_at_call=12)
        result = await run_batch(store, batch_id)
        book = await ledger(store, batch_id)
        assert_consistent(book)
        assert book["calls_sent"] == 12 == book["budget"]
        assert book["lost"] == 2 and book["failed"] == 2
        assert result.status == "COMPLETED" and result.stop_reason == "budget"
    finally:
        await store.close()


async def test_a_batch_stored_before_check_pairs_resumes_as_it_started(
    db_url: str, tmp_path: Path
) -> None:
    """A batch stored by a version without ``MISFIT_CHECK_SHARE`` (the key missing from its
    settings) is resumed without check pairs, which are on by default now: crashed at the
    same call and resumed, it asks what a batch stored with ``MISFIT_CHECK_SHARE=0`` asks
    (the calls lost at the crash count against the budget in both). 24 essays, 200 calls
    for 276 edges, so the default asks check pairs (the control)."""
    inventory = REGULAR24
    tight = {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 200}
    default = write_profile(tmp_path / "default.yaml", tight, JUDGE)
    without = write_profile(tmp_path / "without.yaml", {**tight, "MISFIT_CHECK_SHARE": 0.0}, JUDGE)
    store = await open_store(resolve_db_url(db_url))
    try:
        plain = await new_batch(store, inventory, without, "plain")
        checked = await new_batch(store, inventory, default, "checked")
        old = await new_batch(store, inventory, default, "old")
        stored = dict((await repo.find_batch(store, old)).settings)
        del stored["MISFIT_CHECK_SHARE"]
        async with store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE batches SET settings_json = :s WHERE id = :b"),
                {"s": json.dumps(stored), "b": old},
            )
        for batch_id in (plain, checked, old):
            with pytest.raises(Crash):
                await run_batch(store, batch_id, crash_at_call=80)
            assert (await run_batch(store, batch_id)).status == "COMPLETED"
        assert await answers(store, checked) != await answers(store, plain)  # the control
        assert await answers(store, old) == await answers(store, plain)
    finally:
        await store.close()


# ---------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Starts real ``cj-run`` processes, forked from one warm interpreter per module."""
    with Launcher(tmp_path_factory.mktemp("processes")) as started:
        yield started


def hostile_judge(server: HostileServer) -> dict[str, Any]:
    """A judge profile for the test's server (calls never time out: the server holds them
    while the test acts, and releases them when it is done)."""
    return {
        "kind": "openai_compatible",
        "name": "held",
        "model": "held-model",
        "base_url": server.url,
        "timeout_s": 3600,
        "max_connections": 8,
    }


def test_resume_json_after_sigkill_prints_the_execute_summary(
    db_url: str, tmp_path: Path, launcher: Launcher
) -> None:
    """Rendezvous, not timing: the server holds every call from the 30th on, so the batch
    is mid-run (calls in flight) when it is killed, however slow the machine is."""
    inventory = twelve_essays(tmp_path)
    with HostileServer() as server:
        profile = write_profile(tmp_path / "held.yaml", SETTINGS, hostile_judge(server))
        execute = ["execute", "--inventory", str(inventory), "--profile", str(profile)]
        server.hold(30)
        child = launcher.start([*execute, "--db", db_url, "--batch-name", "killed", "--quiet"])
        server.wait_for(30)
        child.kill()
        server.release()
        resumed = run(["resume", "killed", "--db", db_url, "--json"])
        assert resumed.exit_code == 0, resumed.output
        summary = json.loads(resumed.stdout)
        fresh = run([*execute, "--db", db_url, "--json", "--no-cache"])
        assert fresh.exit_code == 0, fresh.output
        reference = json.loads(fresh.stdout)
    assert list(summary) == list(reference)  # the same object, key for key
    same = (
        "status",
        "stop_reason",
        "seed",
        "successful_comparisons",
        "failed_comparisons",
        "waves",
        "resampling_pass_count",
        "successful_pairs_count",
        "max_skew",
        "top",
        "ssr",
    )
    assert {k: summary[k] for k in same} == {k: reference[k] for k in same}
    lost = summary["attempt_errors"].get("lost", 0)
    assert lost >= 1  # the held calls were in flight at the kill
    assert summary["calls_sent"] == reference["calls_sent"] + lost


def test_a_second_process_is_refused_and_a_dead_ones_lock_is_taken_over(
    db_url: str, tmp_path: Path, launcher: Launcher
) -> None:
    """The server holds the first process's 3rd call until the test releases it: the
    first process is certainly mid-batch, holding the lock, while the second one starts."""
    with HostileServer() as server:
        profile = write_profile(
            tmp_path / "held.yaml",
            {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 60, "MAX_CONCURRENT_REQUESTS": 2},
            hostile_judge(server),
        )
        execute = ["execute", "-i", str(LOWER5), "--profile", str(profile), "--db", db_url]
        server.hold(3)
        first = launcher.start([*execute, "--batch-name", "busy", "--quiet"])
        server.wait_for(3)
        second = launcher.start(["resume", "busy", "--db", db_url])
        assert second.wait(PATIENCE_S) == 2
        assert "being run by another process" in second.output()
        assert "Traceback" not in second.output()
        assert first.alive()  # the refused process did not disturb the running one
        first.kill()  # SIGKILL: the lock stays behind, held by a dead pid
        server.release()
        third = launcher.start(["resume", "busy", "--db", db_url, "--quiet"])
        assert third.wait(PATIENCE_S) == 0, third.output()
        assert "Task exception was never retrieved" not in third.output()
    finished = run(["resume", "busy", "--db", db_url])
    assert finished.exit_code == 2
    assert "already finished (COMPLETED" in finished.stderr


def test_resume_names_an_unknown_batch(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    done = run(["execute", "-i", str(LOWER5), "--profile", "mock_lower5", "--db", str(db), "-q"])
    assert done.exit_code == 0
    result = run(["resume", "nope", "--db", str(db)])
    assert result.exit_code == 2
    assert "no batch with id or name 'nope'" in result.stderr
    missing = run(["resume", "x", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no database" in missing.stderr
    assert not (tmp_path / "none.db").exists()


# ---------------------------------------------------------------- the crash test


def test_sigkill_at_20_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, launcher: Launcher
) -> None:
    """``cj-run execute`` on the regular example, killed with SIGKILL at 20 points spread at
    random over the run (plus two kills right after a start), resumed each time. See
    ``benchmarks/crash_resume.py`` for the checks made after every kill. The judge is a
    local server that holds the calls a few after each kill point until the kill, so
    every kill lands mid-run however slow the machine."""
    seed = random.SystemRandom().randrange(1, 10_000)
    with HostileServer() as server:  # holds calls ahead of each kill point: no race
        result = crash_round(
            tmp_path / "round",
            launcher,
            seed=seed,
            kills=20,
            rng=random.Random(seed),
            judge=hostile_judge(server),
            gate=server,
        )
    assert result.ok, f"seed {seed}: {result.problems}"
    assert result.kills_mid_run == 20
    assert result.lost_calls > 0  # kills landed with calls in flight
    assert result.calls_killed == result.calls_reference + result.lost_calls


def test_sigkill_while_hostile_answers_are_stored(tmp_path: Path, launcher: Launcher) -> None:
    """Every third answer carries a lone surrogate and a NUL. Three times, the server holds a
    call, lets it go and the process is killed at once (while that answer is being made
    storable and committed); after each kill the stored batch keeps every invariant of the
    crash test. At the end every answer the server delivered is stored or its call
    counted as lost, and no comparison has two answers."""

    def script(number: int, request: dict[str, Any]) -> Reply | None:
        if number % 3:
            return None
        text = "bad \ud83d and \x00 end"
        return Reply(body=answer_body(winner=winner_of(request), justification=text))

    db = tmp_path / "cj.db"
    inventory = twelve_essays(tmp_path)
    with HostileServer(script) as server:
        profile = write_profile(tmp_path / "hostile.yaml", SETTINGS, hostile_judge(server))
        argv = ["execute", "--inventory", str(inventory), "--profile", str(profile),
                "--db", str(db), "--batch-name", "hostile", "--quiet"]  # fmt: skip
        previous: Snapshot | None = None
        for _ in range(3):
            target = server.requests + 9
            server.hold(target)
            child = launcher.start(argv)
            server.wait_for(target)
            server.release()
            child.kill()
            snap = snapshot(db, "hostile")
            assert check_invariants(snap, previous) == []
            assert snap.status == "RUNNING"
            previous = snap
            argv = ["resume", "hostile", "--db", str(db), "--quiet"]
        done = run(["resume", "hostile", "--db", str(db), "--json"])
        assert done.exit_code == 0, done.output
    final = snapshot(db, "hostile")
    assert check_invariants(final, previous) == [] and final.status == "COMPLETED"
    assert server.requests <= final.calls_sent  # a kill may fall between storing and sending
    answered = len(final.successes)
    assert answered <= server.delivered <= answered + final.lost
    justifications = [row[9] for row in final.successes.values()]
    assert "bad \ufffd and \ufffd end" in justifications
