"""Pipelined waves (spec §5a): the same seed gives the same batch whatever the timing.

The judge's answers are put out of order on purpose: every call waits a random number of
event-loop turns (drawn from its own generator, so each run scrambles differently) before
the mock answers. No wall clock is involved: the order of the answers is what changes.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

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
from cj_runner.services.executor import BatchExecutor, RunResult, pipeline_depth
from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage import repository as repo
from tests.cli.helpers import REGULAR24, query, write_profile

JUDGE: dict[str, Any] = {
    "kind": "mock",
    "seed": 5,
    "noise": 1.0,
    "latency": {"distribution": "zero"},
    "errors": {"timeout": 0.04},  # transient errors: retries are scrambled too
}


class ScramblingJudge:
    """The mock judge, answering after a random number of event-loop turns."""

    def __init__(self, inner: Judge, seed: int | None) -> None:
        self.inner = inner
        self.rng = random.Random(seed)
        self.scramble = seed is not None
        self.in_flight = 0
        self.name, self.model, self.prompt_hash = inner.name, inner.model, inner.prompt_hash
        self.price_input_per_mtok = inner.price_input_per_mtok
        self.price_output_per_mtok = inner.price_output_per_mtok

    async def judge(self, request: JudgeRequest) -> Verdict:
        for _ in range(self.rng.randrange(0, 60) if self.scramble else 0):
            await asyncio.sleep(0)
        return await self.inner.judge(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_once(
    folder: Path, settings: dict[str, Any], scramble: int | None
) -> tuple[RunResult, list[tuple[Any, ...]]]:
    folder.mkdir(parents=True)
    profile = write_profile(folder / "p.yaml", settings, JUDGE)
    store = await open_store(resolve_db_url(str(folder / "cj.db")))
    try:
        prepared = await prepare(store, RunRequest(inventory=REGULAR24, profile=str(profile)))
        batch_id = await create_batch(store, prepared, plan_summary(prepared))
        batch = await repo.find_batch(store, batch_id)
        judge = ScramblingJudge(build_judge(stored_judge_config(batch)), scramble)
        runner = BatchExecutor(
            store,
            batch,
            await repo.load_nodes(store, batch_id),
            judge,  # type: ignore[arg-type]
            settings_from_stored(batch.settings),
            use_cache=False,
        )
        try:
            result = await runner.run()
        finally:
            await judge.aclose()
    finally:
        await store.close()
    rows = query(
        folder / "cj.db",
        "SELECT slot, attempt, a_idx, b_idx, mode, wave, status, winner, error_kind "
        "FROM comparisons ORDER BY slot, attempt",
    )
    return result, rows


async def test_same_seed_same_batch_whatever_the_order_of_the_answers(tmp_path: Path) -> None:
    # the budget does not bind (the run ends at its resampling cap): which retry gets the
    # last call of a binding budget is timing (docs/decisions.md)
    settings = {"MAX_CONCURRENT_REQUESTS": 32, "MAX_PAIRWISE_COMPARISONS": 900, "SEED": 9}
    settings |= {"USE_ANCHORS": False, "SCORE_STABILITY_THRESHOLD": 0.0, "MAX_ITERATIONS": 90}
    plain = await run_once(tmp_path / "plain", settings, None)
    first = await run_once(tmp_path / "one", settings, 1)
    second = await run_once(tmp_path / "two", settings, 2)
    assert plain[0].status == "COMPLETED" and plain[0].stop_reason == "resampling_cap"
    for other in (first, second):
        assert other[0].status == plain[0].status
        assert other[0].stop_reason == plain[0].stop_reason
        assert other[1] == plain[1]  # the same calls: pairs, orientations, waves, answers
    assert len(plain[1]) <= 900


class GateJudge(ScramblingJudge):
    """Holds the first calls until ``slots`` of them are in flight at once."""

    def __init__(self, inner: Judge, slots: int) -> None:
        super().__init__(inner, None)
        self.slots = slots
        self.full = asyncio.Event()

    async def judge(self, request: JudgeRequest) -> Verdict:
        if not self.full.is_set():
            if self.in_flight + 1 >= self.slots:
                self.full.set()
            else:
                self.in_flight += 1
                try:
                    await self.full.wait()
                finally:
                    self.in_flight -= 1
        return await super().judge(request)


async def test_later_waves_fill_every_slot_before_the_first_wave_is_answered(
    tmp_path: Path,
) -> None:
    # waves of 12, 32 slots: only waves planned ahead can fill them; no answer arrives
    # before all 32 calls are out (the run could not finish otherwise)
    # a budget with room for every attempt of the open waves: waves are planned ahead
    settings = {"MAX_CONCURRENT_REQUESTS": 32, "MAX_PAIRWISE_COMPARISONS": 300, "SEED": 2}
    settings |= {"USE_ANCHORS": False, "SCORE_STABILITY_THRESHOLD": 0.0}
    profile = write_profile(tmp_path / "p.yaml", settings, JUDGE)
    store = await open_store(resolve_db_url(str(tmp_path / "cj.db")))
    try:
        prepared = await prepare(store, RunRequest(inventory=REGULAR24, profile=str(profile)))
        batch_id = await create_batch(store, prepared, plan_summary(prepared))
        batch = await repo.find_batch(store, batch_id)
        judge = GateJudge(build_judge(stored_judge_config(batch)), 32)
        runner = BatchExecutor(
            store,
            batch,
            await repo.load_nodes(store, batch_id),
            judge,  # type: ignore[arg-type]
            settings_from_stored(batch.settings),
            use_cache=False,
        )
        # a safety net against a hang, not a speed limit
        result = await asyncio.wait_for(runner.run(), timeout=300)
        await judge.aclose()
    finally:
        await store.close()
    assert judge.full.is_set()
    assert result.status == "COMPLETED" and result.stop_reason == "budget"


async def test_a_stop_decision_finishes_the_open_waves_and_plans_no_more(tmp_path: Path) -> None:
    # stability on: the decision comes while later waves are in flight; no wave is
    # planned after it, the open ones are asked to the end, and the same seed still
    # gives the same batch
    settings = {"MAX_CONCURRENT_REQUESTS": 32, "MAX_PAIRWISE_COMPARISONS": 300, "SEED": 4}
    settings |= {"USE_ANCHORS": False, "SCORE_STABILITY_THRESHOLD": 0.5}
    plain = await run_once(tmp_path / "plain", settings, None)
    scrambled = await run_once(tmp_path / "mixed", settings, 3)
    assert plain[0].stop_reason == "stability"
    assert scrambled[0].stop_reason == "stability"
    assert scrambled[1] == plain[1]
    last_closed = query(tmp_path / "plain" / "cj.db", "SELECT MAX(wave) FROM waves")[0][0]
    later = {r[6] for r in plain[1] if r[5] > last_closed}
    assert "success" in later  # the waves planned before the decision were asked
    assert later <= {"success", "failed", "retried"}  # to the end: nothing left unsent
    depth = pipeline_depth(settings_from_stored(settings))
    assert max(r[5] for r in plain[1]) <= last_closed + depth - 1
