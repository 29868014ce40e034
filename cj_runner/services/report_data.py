"""What every report reads: the stored batch (:class:`BatchData`) and the shared helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cj_runner.core.models import Mode, Outcome
from cj_runner.errors import UserError
from cj_runner.services.stop_check import STOP_CHECK_KEY, stop_detail
from cj_runner.services.summary import is_provisional, outcomes_from_attempts
from cj_runner.storage import Store
from cj_runner.storage import repository as repo

Z95 = 1.959963984540054
"""Standard normal 97.5% quantile: the 95% interval of a score is ``score ± Z95 * SE``."""


NO_ANCHORS = "the batch has no anchors"
NOT_FINISHED = "the batch has not been scored yet"
FAILED_BATCH = "the batch failed: no grades are projected for a failed batch"


@dataclass(frozen=True)
class BatchData:
    """Everything the reports read from the store for one batch."""

    batch: repo.BatchRecord
    nodes: list[repo.NodeRecord]
    attempts: list[dict[str, Any]]
    waves: list[dict[str, Any]]
    projections: list[dict[str, Any]]
    assignment: repo.AssignmentRecord | None

    @cached_property
    def outcomes(self) -> list[Outcome]:
        """The successful comparisons, in slot order (built once)."""
        return outcomes_from_attempts(self.attempts)

    @property
    def extra(self) -> dict[str, Any]:
        """The batch state's ``extra_json`` (final fit details, projection info)."""
        return dict(self.batch.state.get("extra_json") or {})

    def essay_id(self, idx: int) -> str:
        """The essay id of node ``idx``."""
        return self.nodes[idx].essay_id


async def load_batch_data(store: Store, batch_ref: str) -> BatchData:
    """Load the batch named by id or name, with its nodes, attempts, waves, projections."""
    batch = await repo.find_batch(store, batch_ref)
    assignment = (
        await repo.get_assignment(store, batch.assignment_id) if batch.assignment_id else None
    )
    return BatchData(
        batch=batch,
        nodes=await repo.load_nodes(store, batch.id),
        attempts=await repo.load_attempts(store, batch.id),
        waves=await repo.load_waves(store, batch.id),
        projections=await repo.load_projections(store, batch.id),
        assignment=assignment,
    )


# ---------------------------------------------------------------- helpers


def num(value: Any) -> float | None:
    """A finite float, or ``None`` (JSON has no ``nan``)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def header(data: BatchData) -> dict[str, Any]:
    """The keys every report starts with: the batch, its status and flags."""
    b = data.batch
    return {
        "batch_id": b.id,
        "batch_name": b.name,
        "status": b.status,
        "stop_reason": b.stop_reason,
        "stop_detail": stop_detail(data.extra.get(STOP_CHECK_KEY)),
        "provisional": is_provisional(b.status, data.nodes),
        "judge_health": data.extra.get("judge_health"),
    }


def parse_mode(value: str | None) -> Mode | None:
    """``--mode`` as a :class:`Mode` (``None`` = every mode); :class:`UserError` if unknown."""
    if value is None or value == "":
        return None
    try:
        return Mode(value)
    except ValueError:
        allowed = ", ".join(m.value for m in Mode)
        raise UserError(f"--mode must be one of {allowed}; got {value!r}") from None
