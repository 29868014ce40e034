"""The ``TARGET_RELIABILITY`` stop kept across a crash between its decision and finalization.

A batch that stops on the reliability target stores the decision and what the stop
checked (``stop_check``: the robust reliability, its SD, the lower bound, the target, the
comparisons) at the wave that decided. The run is then ended at three points, each
reached by an explicit rendezvous in the executor's own sequence (never a timer), with
tests/cli/test_resume.py's machinery (an exception that stands for the process dying):

* killed right after the decision, while the waves planned before it are still being
  asked (``_finish_open_waves``: calls may be in flight);
* Ctrl-C right after the decision (the stop event set as ``_finish_open_waves`` starts):
  the run ends INTERRUPTED;
* killed after every call was answered and stored, before finalization (``_finalize``).

``cj-run resume`` then finalizes: COMPLETED on ``target_reliability`` with the
uninterrupted run's ``stop_detail`` (the same line), the same answers, no comparison
answered twice, every call counted once (``calls_sent`` is the uninterrupted run's plus
the calls lost in flight: a killed process cannot know whether their answers came, so
they are asked again, as after any crash), none lost after Ctrl-C, and, when nothing was
in flight, no judge call at all. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cj_runner.core.continuation import Action, StopReason
from cj_runner.services.executor import BatchExecutor
from cj_runner.services.summary import build_summary
from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage import repository as repo
from tests.cli.helpers import REGULAR24, run, write_profile
from tests.cli.test_resume import (
    Crash,
    answers,
    assert_consistent,
    crash_in,
    ledger,
    new_batch,
    run_batch,
)

SETTINGS: dict[str, Any] = {
    "MAX_PAIRWISE_COMPARISONS": 552,  # does not bind: the target stops the batch
    "TARGET_RELIABILITY": 0.7,
    "AUDIT_SHARE": 0.2,
    "MIN_COMPARISONS_FOR_STABILITY_CHECK": 24,
    "SCORE_STABILITY_THRESHOLD": 0.0,
    "MAX_ITERATIONS": 200,
    "MAX_CONCURRENT_REQUESTS": 4,
    "RETRY_BASE_DELAY_S": 0.0,
    "RETRY_MAX_DELAY_S": 0.0,
    "USE_ANCHORS": False,
    "SEED": 3,
}
JUDGE: dict[str, Any] = {
    "kind": "mock",
    "seed": 3,
    "latency": {"distribution": "fixed", "median_ms": 1},
}


class CtrlCAfterTheDecision(BatchExecutor):
    """Ctrl-C arrives as the run starts to finish the waves planned before its stop
    decision (the decision is queued for storage; the interrupted run flushes it)."""

    async def _finish_open_waves(self) -> bool:
        self.stop_event.set()
        return await super()._finish_open_waves()


ENDINGS: dict[str, dict[str, Any]] = {
    "killed right after the decision": {"executor": crash_in("_finish_open_waves")},
    "Ctrl-C right after the decision": {
        "executor": CtrlCAfterTheDecision,
        "stop_event": "new",
    },
    "killed before finalization": {"executor": crash_in("_finalize")},
}


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run."""

    profile: Path
    answers: Any
    book: dict[str, Any]
    stop_check: dict[str, Any]
    summary: dict[str, Any]


def stored_check(batch: repo.BatchRecord) -> dict[str, Any]:
    check = (batch.state.get("extra_json") or {}).get("stop_check")
    assert check, "no stop check stored"
    return dict(check)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("target-reference")
    profile = write_profile(folder / "p.yaml", SETTINGS, JUDGE)

    async def body() -> Reference:
        store = await open_store(resolve_db_url(str(folder / "ref.db")))
        try:
            batch_id = await new_batch(store, REGULAR24, profile, "reference")
            result = await run_batch(store, batch_id)
            assert (result.status, result.stop_reason) == ("COMPLETED", "target_reliability")
            batch = await repo.find_batch(store, batch_id)
            return Reference(
                profile,
                await answers(store, batch_id),
                await ledger(store, batch_id),
                stored_check(batch),
                await build_summary(store, batch_id),
            )
        finally:
            await store.close()

    return asyncio.run(body())


async def _attempt_rows(store: Any, batch_id: str) -> list[tuple[Any, ...]]:
    rows = await repo.load_attempts(store, batch_id)
    return sorted((r["slot"], r["attempt"], r["status"], r["winner"]) for r in rows)


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_resume_finalizes_with_the_stop_check_of_the_deciding_wave(
    db_url: str, reference: Reference, ending: str
) -> None:
    options = dict(ENDINGS[ending])
    stop = asyncio.Event() if options.pop("stop_event", None) else None
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await new_batch(store, REGULAR24, reference.profile, "ended")
        if stop is None:
            with pytest.raises(Crash):
                await run_batch(store, batch_id, **options)
        else:
            result = await run_batch(store, batch_id, stop_event=stop, **options)
            assert result.status == "INTERRUPTED" and result.interrupted
        batch = await repo.find_batch(store, batch_id)
        assert batch.status == ("INTERRUPTED" if stop is not None else "RUNNING")
        # the decision and what it checked are stored, as the uninterrupted run stored them
        waves = await repo.load_waves(store, batch_id)
        assert (waves[-1]["decision"], waves[-1]["reason"]) == (
            Action.FINALIZE_SCORING.value,
            StopReason.TARGET_RELIABILITY.value,
        )
        assert stored_check(batch) == reference.stop_check
        before = await answers(store, batch_id)
        rows_before = await _attempt_rows(store, batch_id)
        book = await ledger(store, batch_id)
        assert_consistent(book)
        in_flight_at_the_end = book["in_flight"] + sum(
            1 for r in rows_before if r[2] in ("planned", "released")
        )
    finally:
        await store.close()

    resumed = await asyncio.to_thread(run, ["resume", batch_id, "--db", db_url, "--json"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert (summary["status"], summary["stop_reason"]) == ("COMPLETED", "target_reliability")
    assert summary["stop_detail"] == reference.summary["stop_detail"]
    assert summary["stop_detail"] is not None
    assert summary["robust_reliability"] == reference.summary["robust_reliability"]

    store = await open_store(resolve_db_url(db_url))
    try:
        assert stored_check(await repo.find_batch(store, batch_id)) == reference.stop_check
        after = await answers(store, batch_id)
        assert not before - after  # nothing answered before the end is gone
        assert after == reference.answers  # the same pairs, orientations, waves, winners
        book = await ledger(store, batch_id)
        assert_consistent(book)  # no comparison answered twice, call numbers 1..n
        assert book["in_flight"] == 0
        assert book["calls_sent"] == reference.book["calls_sent"] + book["lost"]
        assert book["waves"] == reference.book["waves"]
        if stop is not None:
            # Ctrl-C lets the calls in flight answer (a grace period): none is lost, none
            # asked again; resume asks the planned rest of the open waves once
            assert book["lost"] == 0
            assert book["calls_sent"] == reference.book["calls_sent"]
        if ending == "killed before finalization":
            # every call was answered and stored before the end: resume asks nothing
            assert in_flight_at_the_end == 0 and book["lost"] == 0
            assert await _attempt_rows(store, batch_id) == rows_before
    finally:
        await store.close()
