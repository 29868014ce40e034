"""Pipelined waves (spec §5a): the same seed gives the same batch whatever the timing.

The judge's answers are put out of order on purpose: every call waits a random number of
event-loop turns (drawn from its own generator, so each run scrambles differently) before
the mock answers. No wall clock is involved: the order of the answers is what changes.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

from cj_runner.config import settings_from_stored
from cj_runner.judges.base import Judge, JudgeRequest, Verdict
from cj_runner.judges.registry import build_judge
from cj_runner.services.batches import (
    stored_judge_config,
)
from cj_runner.services.executor import RunResult, send_window
from cj_runner.storage import open_store, resolve_db_url
from tests.cli.helpers import query, write_profile
from tests.services.executor_setup import executor_for, new_batch

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
        batch = await new_batch(store, profile)
        judge = ScramblingJudge(build_judge(stored_judge_config(batch)), scramble)
        runner = await executor_for(store, batch, judge, use_cache=False)
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


class ReorderingJudge(ScramblingJudge):
    """The mock judge, answering calls in an order of its own choosing (by rendezvous).

    Every call is held. Once all ``slots`` are held, or no new call has come for a few
    event-loop turns (the executor has nothing else to send until an answer arrives), one
    held call is answered: the newest (``order="reversed"``: the first calls of a wave are
    answered last) or one drawn by a seeded generator. No wall clock is involved.
    """

    IDLE_TURNS = 20

    def __init__(self, inner: Judge, slots: int, order: str, seed: int = 0) -> None:
        super().__init__(inner, None)
        self.slots, self.order = slots, order
        self.pick = random.Random(seed)
        self.held: list[asyncio.Future[None]] = []
        self.answered = 0
        self.driver: asyncio.Task[None] | None = None

    async def judge(self, request: JudgeRequest) -> Verdict:
        if self.driver is None:
            self.driver = asyncio.create_task(self._drive())
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held.append(turn)
        await turn
        self.answered += 1
        return await self.inner.judge(request)

    async def _drive(self) -> None:
        while True:
            seen, idle = len(self.held), 0
            while len(self.held) < self.slots and idle < self.IDLE_TURNS:
                await asyncio.sleep(0)  # one event-loop turn, not a wait on the clock
                idle = idle + 1 if len(self.held) == seen else 0
                seen = len(self.held)
            if not self.held:
                continue
            k = len(self.held) - 1 if self.order == "reversed" else self.pick.randrange(seen)
            self.held.pop(k).set_result(None)

    async def aclose(self) -> None:
        if self.driver is not None:
            self.driver.cancel()
        await super().aclose()


async def run_reordered(
    folder: Path, settings: dict[str, Any], judge_cfg: dict[str, Any], order: str | None
) -> tuple[RunResult, list[tuple[Any, ...]], int]:
    folder.mkdir(parents=True)
    profile = write_profile(folder / "p.yaml", settings, judge_cfg)
    store = await open_store(resolve_db_url(str(folder / "cj.db")))
    try:
        batch = await new_batch(store, profile)
        inner = build_judge(stored_judge_config(batch))
        slots = int(settings["MAX_CONCURRENT_REQUESTS"])
        judge = (
            ReorderingJudge(inner, slots, order, seed=7) if order else ScramblingJudge(inner, None)
        )
        runner = await executor_for(store, batch, judge, use_cache=False)
        try:
            result = await runner.run()
        finally:
            await judge.aclose()
    finally:
        await store.close()
    rows = query(
        folder / "cj.db",
        "SELECT slot, attempt, call_no IS NOT NULL, a_idx, b_idx, mode, wave, status, winner, "
        "error_kind FROM comparisons ORDER BY slot, attempt",
    )
    answer_order = query(
        folder / "cj.db",
        "SELECT slot FROM comparisons WHERE status = 'success' ORDER BY received_at, slot",
    )
    in_slot_order = sum(1 for a, b in itertools.pairwise(answer_order) if a < b)
    return result, rows, in_slot_order


async def test_answers_released_reversed_or_shuffled_store_the_same_comparisons(
    tmp_path: Path,
) -> None:
    # C = 32 with the default waves of 12, a budget that binds, stability off: the judge
    # answers the newest call first, or a seeded-random one, by rendezvous; every run
    # stores the same comparisons, call for call (pairs, orientation, wave, answer)
    settings = {"MAX_CONCURRENT_REQUESTS": 32, "MAX_PAIRWISE_COMPARISONS": 400, "SEED": 11}
    settings |= {"USE_ANCHORS": False, "SCORE_STABILITY_THRESHOLD": 0.0, "MAX_ITERATIONS": 500}
    judge_cfg: dict[str, Any] = {"kind": "mock", "seed": 5, "noise": 1.0}
    judge_cfg["latency"] = {"distribution": "zero"}
    plain = await run_reordered(tmp_path / "plain", settings, judge_cfg, None)
    reversed_ = await run_reordered(tmp_path / "reversed", settings, judge_cfg, "reversed")
    shuffled = await run_reordered(tmp_path / "shuffled", settings, judge_cfg, "shuffled")
    assert plain[0].status == "COMPLETED" and plain[0].stop_reason == "budget"
    assert sum(1 for r in plain[1] if r[2]) == 400  # every call of the budget was sent
    for other in (reversed_, shuffled):
        assert (other[0].status, other[0].stop_reason) == (plain[0].status, plain[0].stop_reason)
        assert other[1] == plain[1]
    # the orders really differed: answers came back far from slot order
    # (plain: 399 of 399 successive answers in slot order; reversed 33, shuffled 210)
    assert reversed_[2] < 0.75 * plain[2] and shuffled[2] < 0.75 * plain[2]


async def test_a_binding_budget_with_retries_is_the_same_whatever_the_order(
    tmp_path: Path,
) -> None:
    # transient errors and a budget that binds: retries and later comparisons' first calls
    # want the last calls of the budget; they go in slot order whatever the timing
    settings = {"MAX_CONCURRENT_REQUESTS": 32, "MAX_PAIRWISE_COMPARISONS": 300, "SEED": 13}
    settings |= {"USE_ANCHORS": False, "SCORE_STABILITY_THRESHOLD": 0.0, "MAX_ITERATIONS": 500}
    settings |= {"RETRY_BASE_DELAY_S": 0.0, "RETRY_MAX_DELAY_S": 0.0}
    judge_cfg: dict[str, Any] = {"kind": "mock", "seed": 5, "noise": 1.0}
    judge_cfg |= {"latency": {"distribution": "zero"}, "errors": {"timeout": 0.1}}
    plain = await run_reordered(tmp_path / "plain", settings, judge_cfg, None)
    reversed_ = await run_reordered(tmp_path / "reversed", settings, judge_cfg, "reversed")
    shuffled = await run_reordered(tmp_path / "shuffled", settings, judge_cfg, "shuffled")
    assert plain[0].stop_reason == "budget"
    assert sum(1 for r in plain[1] if r[2]) == 300  # the whole budget went out
    assert any(r[7] == "retried" for r in plain[1])  # retries took part of it
    assert reversed_[1] == plain[1]
    assert shuffled[1] == plain[1]


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
        batch = await new_batch(store, profile)
        judge = GateJudge(build_judge(stored_judge_config(batch)), 32)
        runner = await executor_for(store, batch, judge, use_cache=False)
        # a safety net against a hang, not a speed limit
        result = await asyncio.wait_for(runner.run(), timeout=300)
        await judge.aclose()
    finally:
        await store.close()
    assert judge.full.is_set()
    assert result.status == "COMPLETED" and result.stop_reason == "budget"


async def test_a_stop_decision_sends_nothing_new_and_is_the_same_whatever_the_timing(
    tmp_path: Path,
) -> None:
    # stability on: the decision comes while later waves are in flight. The waves whose
    # calls could already go out (the send window before the decision) are asked to the
    # end; the wave planned beyond it is stored and cancelled, never sent; no wave is
    # planned after the decision; and the same seed still gives the same batch
    settings = {"MAX_CONCURRENT_REQUESTS": 32, "MAX_PAIRWISE_COMPARISONS": 300, "SEED": 4}
    settings |= {"USE_ANCHORS": False, "SCORE_STABILITY_THRESHOLD": 0.5}
    plain = await run_once(tmp_path / "plain", settings, None)
    scrambled = await run_once(tmp_path / "mixed", settings, 3)
    assert plain[0].stop_reason == "stability"
    assert scrambled[0].stop_reason == "stability"
    assert scrambled[1] == plain[1]
    decided = query(tmp_path / "plain" / "cj.db", "SELECT MAX(wave) FROM waves")[0][0]
    window = send_window(settings_from_stored(settings))
    asked = {r[6] for r in plain[1] if decided < r[5] < decided + window}
    assert "success" in asked  # the waves that could send before the decision were asked
    assert asked <= {"success", "failed", "retried"}  # to the end: nothing left unsent
    beyond = [r for r in plain[1] if r[5] >= decided + window]
    assert beyond and {r[5] for r in beyond} == {decided + window}  # planned, no later one
    assert {r[6] for r in beyond} == {"cancelled"}  # never sent
    sent = query(
        tmp_path / "plain" / "cj.db",
        "SELECT COUNT(*) FROM comparisons WHERE call_no IS NOT NULL AND wave >= ?",
        (decided + window,),
    )
    assert sent == [(0,)]
    state = query(tmp_path / "plain" / "cj.db", "SELECT calls_sent FROM batch_state")
    stored = query(
        tmp_path / "plain" / "cj.db", "SELECT COUNT(*) FROM comparisons WHERE call_no IS NOT NULL"
    )
    assert state[0][0] == stored[0][0]  # cancelled rows are not counted against the budget
