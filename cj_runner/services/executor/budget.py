"""The budget in slot order and the send window (spec §5a).

:class:`SlotOrderBudget` hands the call budget to comparisons in slot order whatever the
timing; :func:`send_window` and :func:`pipeline_depth` say how many waves may send and be
open at once. Both depend only on the settings and the plan, so a seeded batch asks the
same calls whatever the timing.
"""

from __future__ import annotations

import asyncio
import bisect

from cj_runner.config import Settings


class SlotOrderBudget:
    """The budget, handed out to comparisons in slot order whatever the timing.

    Every call sent is counted at the moment it is sent (the budget is never exceeded).
    Each unfinished comparison has a worst case: the calls it may still send
    (``MAX_ATTEMPTS_PER_COMPARISON`` minus the judge attempts it has sent). A call of
    comparison ``s`` goes out when it fits even if every comparison of a lower slot sends
    its worst case; it is refused when no call fits at all; otherwise it waits until the
    earlier comparisons settle. So the calls sent are exactly those of asking the
    comparisons one after the other in slot order, retries included, and a planned
    comparison is never starved by a later one. (A fallback after a refused request form
    is a call beyond the worst case: with real providers, not the mock judge, the last
    calls of a binding budget may then go to a later comparison.)
    """

    def __init__(self, total_budget: int, max_attempts: int, *, ordered: bool = True) -> None:
        self.total_budget = total_budget
        self.max_attempts = max_attempts
        self.ordered = ordered  # False: any call fits while the budget lasts
        self.calls_sent = 0
        self._slots: list[int] = []  # unfinished comparisons, sorted
        self._worst: dict[int, int] = {}
        self._worst_total = 0  # sum of _worst: while the budget covers it, every call fits
        self._changed = asyncio.Event()

    def _set_worst(self, slot: int, worst: int) -> None:
        self._worst_total += worst - self._worst.get(slot, 0)
        self._worst[slot] = worst

    def add(self, slot: int, judge_attempt: int = 1) -> None:
        """An unfinished comparison whose next call is judge attempt ``judge_attempt``."""
        if not self.ordered:
            return
        if slot not in self._worst:
            bisect.insort(self._slots, slot)
        self._set_worst(slot, max(0, self.max_attempts - judge_attempt + 1))

    def _earlier(self, slot: int) -> int:
        return sum(self._worst[u] for u in self._slots[: bisect.bisect_left(self._slots, slot)])

    def fits(self, slot: int) -> bool | None:
        if self.calls_sent >= self.total_budget:
            return False
        # the worst case of every unfinished comparison bounds that of the earlier ones
        if self.calls_sent + 1 + self._worst_total <= self.total_budget:
            return True
        if self.calls_sent + 1 + self._earlier(slot) <= self.total_budget:
            return True
        return None

    async def turn(self, slot: int) -> bool:
        while True:
            fits = self.fits(slot)
            if fits is not None:
                return fits
            self._changed.clear()
            await self._changed.wait()

    def count_call(self, slot: int | None = None, judge_attempt: int = 1) -> int:
        self.calls_sent += 1
        if slot is not None and slot in self._worst:
            self._set_worst(slot, max(0, self.max_attempts - judge_attempt))
            self._changed.set()
        return self.calls_sent

    def finish(self, slot: int) -> None:
        worst = self._worst.pop(slot, None)
        if worst is not None:
            self._worst_total -= worst
            del self._slots[bisect.bisect_left(self._slots, slot)]
            self._changed.set()


def send_window(settings: Settings) -> int:
    """How many waves past the last closed one may send (spec §5a): ``ceil(4 C / wave)``.

    After wave ``k`` closed, the calls of waves ``k + 1 .. k + window`` may go out. Those
    waves hold about ``4 C`` calls, so the ``C`` slots stay busy while the oldest open
    wave waits for its slowest answers (with heavy-tailed latencies a wave's last answer
    can take several times the median) and while it is refitted. The window depends only
    on the settings, so a seeded batch asks the same pairs whatever the timing
    (defaults, C = 8 and waves of 12: 3; C = 32: 11).
    """
    c = settings.MAX_CONCURRENT_REQUESTS
    w = settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION
    return max(2, -(-4 * c // w))


def pipeline_depth(settings: Settings) -> int:
    """How many waves may be open (planned and not closed) at once: the send window + 1.

    Wave ``k + depth`` is planned from the state after wave ``k`` closed and stored, and
    may send once wave ``k + 1`` closes: its plan (the refit, pair selection and the
    plan's commit) is never on the path of a call.
    """
    return send_window(settings) + 1
