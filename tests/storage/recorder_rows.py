"""Rows for the recorder's storage tests: a batch of four essays with its lock taken, a
planned comparison and a first call of it (tests/storage/test_recorder_planned.py,
tests/storage/test_marks.py)."""

from __future__ import annotations

from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import PlannedRow, SentAttempt


async def make_batch(store: Store, owner: str, n_slots: int) -> str:
    """A batch of four essays with room for ``n_slots`` comparisons, locked by ``owner``."""
    nodes = [
        repo.NewNode(essay_id=f"e{i}", is_anchor=False, checksum=f"{i:064d}", text=f"essay {i}")
        for i in range(4)
    ]
    batch_id = await repo.create_batch(
        store,
        name=None,
        assignment_id=None,
        seed=1,
        settings={},
        judge={"kind": "mock"},
        judge_name="mock",
        inventory="inv",
        plan={},
        total_budget=n_slots + 10,
        nodes=nodes,
        max_possible_pairs=6,
    )
    await repo.acquire_lock(store, batch_id, owner)
    return batch_id


def planned(slot: int) -> PlannedRow:
    """Comparison ``slot`` of wave 1: essay 0 against essay ``slot % 3 + 1``."""
    return PlannedRow(slot, 0, slot % 3 + 1, "coverage", 1, 0)


def sent(slot: int, call_no: int, attempt: int = 1) -> SentAttempt:
    """Call ``call_no``, attempt ``attempt`` of comparison ``slot`` (see :func:`planned`)."""
    return SentAttempt(
        slot=slot,
        attempt=attempt,
        call_no=call_no,
        a_idx=0,
        b_idx=slot % 3 + 1,
        mode="coverage",
        wave=1,
        repeat_index=0,
        model="m",
        prompt_hash="h",
        sent_at=repo.utcnow(),
    )
