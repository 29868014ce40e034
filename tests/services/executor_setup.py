"""A batch and its executor for the in-process executor tests: the steps `cj-run execute`
takes before it runs (prepare the inputs, create the batch, read it back), then a
:class:`BatchExecutor` over its stored nodes and settings with the judge the test wraps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cj_runner.config import settings_from_stored
from cj_runner.judges.base import Judge
from cj_runner.services.batches import RunRequest, create_batch, plan_summary, prepare
from cj_runner.services.executor import BatchExecutor
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from tests.cli.helpers import REGULAR24


async def new_batch(store: Store, profile: Path, inventory: Path = REGULAR24) -> repo.BatchRecord:
    """Create the batch of ``inventory`` under ``profile`` (as ``cj-run execute`` does)
    and return it as stored."""
    prepared = await prepare(store, RunRequest(inventory=inventory, profile=str(profile)))
    batch_id = await create_batch(store, prepared, plan_summary(prepared))
    return await repo.find_batch(store, batch_id)


async def executor_for(
    store: Store, batch: repo.BatchRecord, judge: Any, **options: Any
) -> BatchExecutor:
    """The executor of ``batch`` with ``judge`` (any object with the judge's interface:
    tests wrap the mock), its stored nodes and settings; ``options`` as for
    :class:`BatchExecutor` (``use_cache``, ``sleep``, ``batch_api``...)."""
    the_judge: Judge = judge
    return BatchExecutor(
        store,
        batch,
        await repo.load_nodes(store, batch.id),
        the_judge,
        settings_from_stored(batch.settings),
        **options,
    )
