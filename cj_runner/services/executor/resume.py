"""Resuming a batch: the lock's owner check and the rebuild from the stored attempts.

A run rebuilds its in-memory state from the stored batch and attempts when it starts, so
a new batch and a resumed one take the same path (see the package docstring for what a
resume does with lost, released and planned calls).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cj_runner.core.models import Mode
from cj_runner.errors import UserError
from cj_runner.services.calls import Slot
from cj_runner.services.executor.state import FINISHED_BATCH_STATUSES, ExecutorState, OpenWave
from cj_runner.services.stop_check import STOP_CHECK_KEY
from cj_runner.storage import repository as repo
from cj_runner.storage.scores_codec import unpack_scores


def lock_owner_alive(owner: str) -> bool:
    """Whether the process named in a lock (``host:pid:token``) may still be running."""
    try:
        host, pid_text, _ = owner.split(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a killed process whose parent has not reaped it yet is a zombie: it holds nothing
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def stored_doubles(attempts: Sequence[dict[str, Any]]) -> int:
    """Pairs a panel batch asked of two judges on purpose, in its stored waves: a wave
    holds an edge twice only then (selection never plans an edge in flight again)."""
    seen: set[tuple[int, int, int]] = set()
    doubles = 0
    for row in attempts:
        if int(row["attempt"]) != 1:
            continue
        a, b = int(row["a_idx"]), int(row["b_idx"])
        key = (int(row["wave"]), min(a, b), max(a, b))
        if key in seen:
            doubles += 1
        seen.add(key)
    return doubles


class ResumeMixin(ExecutorState):
    """Rebuilds the workflow and the open waves from the stored batch."""

    async def _rebuild(self) -> dict[int, OpenWave]:
        """Rebuild the workflow from the stored batch and attempts (after taking the lock).

        The workflow gets the results of the closed waves (in slot order); the waves
        planned and not closed (several when waves were pipelined) are returned with
        their finished results buffered and their unfinished comparisons to ask.
        """
        self.batch = await repo.find_batch(self.store, self.batch.id)
        if self.batch.status in FINISHED_BATCH_STATUSES:
            raise UserError(
                f"batch {self.batch.id} already finished ({self.batch.status}, "
                f"{self.batch.stop_reason}); nothing to resume"
            )
        self.wf = self._workflow(self.batch.state)
        self.live = self._new_budget()
        closed = self.wf.waves_completed
        # every write of the rebuild is fenced: a process whose lock was taken over since
        # it took it must not mark the new holder's calls in flight lost or sent
        self.lost_on_resume = await repo.mark_in_flight_lost(
            self.store, self.batch.id, owner=self.owner
        )
        attempts = await repo.load_attempts(self.store, self.batch.id)
        if self.use_cache:
            self.cache = await repo.cache_entries(self.store, self.judge.model)
        # a run that died (status still RUNNING) may have sent released calls unrecorded
        crashed = self.batch.status == "RUNNING"
        self.lost_on_resume += await self._possibly_sent(attempts, crashed)
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for row in attempts:
            by_slot.setdefault(row["slot"], []).append(row)
            if row["call_no"] is not None:
                self.live.calls_sent = max(self.live.calls_sent, int(row["call_no"]))
                if int(row["wave"]) <= closed:
                    self.wf.calls_sent += 1
            if not row["cached"]:
                self._add_tokens(
                    int(row["tokens_in"] or 0),
                    int(row["tokens_out"] or 0),
                    int(row.get("tokens_cached") or 0),
                )
        self.lost_total = sum(1 for r in attempts if r["error_kind"] == "lost")
        open_waves: dict[int, OpenWave] = {}
        for slot_no in sorted(by_slot):
            rows = by_slot[slot_no]
            last = rows[-1]
            self.next_slot = max(self.next_slot, slot_no + 1)
            wave = int(last["wave"])
            pair = (int(last["a_idx"]), int(last["b_idx"]))
            ask_index = self.asks.get(pair, 0)
            self.asks[pair] = ask_index + 1
            slot = Slot(
                slot=slot_no,
                a=pair[0],
                b=pair[1],
                mode=last["mode"],
                wave=wave,
                repeat_index=last["repeat_index"],
                ask_index=ask_index,
                judge=last.get("judge"),
            )
            status = last["status"]
            if wave <= closed:
                if status == "success":
                    self.wf.record_success(pair[0], pair[1], last["winner"], slot.mode, key=slot_no)
                    self.cache_hits += int(bool(last["cached"]))
                elif status == "failed":
                    self.wf.record_failure()
                continue
            w = open_waves.get(wave)
            if w is None:
                w = open_waves[wave] = OpenWave(wave, None, [])
            if w.mode is None and slot.mode != Mode.AUDIT.value:
                w.mode = slot.mode  # audit pairs come last in a wave
            w.slots.append(slot)
            # (a call still ``sent`` inside a provider job is counted when its answer
            # is stored, by _on_attempt)
            w.calls += sum(1 for r in rows if r["call_no"] is not None and r["status"] != "sent")
            if status in ("success", "failed", "cancelled"):
                winner = last["winner"] if status == "success" else None
                w.results[slot_no] = (status, winner, bool(last["cached"]))
            else:  # planned, lost or retried: asked again
                planned = status == "planned"
                # ``sent``: a call inside a provider job that has not ended (batch-API
                # mode; mark_in_flight_lost left it): its answer is still coming
                slot.next_attempt = int(last["attempt"]) + (0 if planned or status == "sent" else 1)
                slot.planned_row = planned
                # a resend after a refused form (or of an expired batch request) is the
                # same attempt for the judge
                slot.judge_attempt = 1 + sum(
                    1
                    for r in rows
                    if r["status"] == "retried"
                    and r["error_kind"] not in ("unsupported", "expired")
                )
                slot.truncations = sum(1 for r in rows if r["error_kind"] == "truncated")
                self.live.add(slot_no, slot.judge_attempt)
                w.unfinished.add(slot_no)
        self.wf.doubles_planned = stored_doubles(attempts)
        extra = self.batch.state.get("extra_json") or {}
        self.stop_check = extra.get(STOP_CHECK_KEY)
        scores = unpack_scores(extra, self.wf.n_nodes)
        if scores is not None:
            self.wf.scores = scores
            self.wf.have_fit = bool(extra.get("have_fit", True))
        waves = await repo.load_waves(self.store, self.batch.id)
        if waves and waves[-1]["decision"] and int(waves[-1]["wave"]) == closed:
            self._last_decision = (waves[-1]["decision"], waves[-1]["reason"])
        self.next_wave = max([closed, *open_waves]) + 1
        return open_waves

    async def _possibly_sent(self, attempts: list[dict[str, Any]], crashed: bool) -> int:
        """Comparisons stored as ``released`` whose first call may have gone out.

        After a crash (``crashed``) they count as sent and lost: each gets a call number
        (``attempts`` is updated in place). After a clean stop every call sent was
        stored, so they are planned again. Returns how many were counted as sent.
        """
        released = sorted(
            (r for r in attempts if r["status"] == "released"), key=lambda r: int(r["slot"])
        )
        if not released:
            return 0
        if not crashed:
            await repo.unrelease(self.store, self.batch.id, owner=self.owner)
            for row in released:
                row["status"] = "planned"
            return 0
        top = max((int(r["call_no"]) for r in attempts if r["call_no"] is not None), default=0)
        calls = []
        for offset, row in enumerate(released, start=1):
            row.update(status="lost", error_kind="lost", call_no=top + offset)
            calls.append((int(row["slot"]), top + offset))
        await repo.mark_possibly_sent(self.store, self.batch.id, calls, owner=self.owner)
        return len(calls)
