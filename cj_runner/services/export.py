"""The comparisons of a batch as flat rows: one per judge call (attempt), or one per
successful comparison, for R (BradleyTerry2, sirt), pandas or reading the justifications.

Each row carries both essays' ids, so no join with the nodes is needed: ``essay_a``,
``essay_b``, ``win_a`` and ``win_b`` are BradleyTerry2's ``player1``, ``player2`` and the
two columns of its ``cbind(win1, win2)`` outcome, and ``essay_a``, ``essay_b``, ``win_a``
are ``sirt::btm``'s three data columns (id1, id2, result). Column names and their order
are a stable interface (documented in docs/reports.md and pinned by a test).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cj_runner.judges.config import judge_config_from_mapping, token_cost
from cj_runner.judges.panel import member_of
from cj_runner.services.reports import BatchData, load_batch_data
from cj_runner.storage import Store

__all__ = ["COMPARISON_COLUMNS", "build_comparisons", "comparison_rows"]

COMPARISON_COLUMNS: tuple[str, ...] = (
    "batch_id",
    "wave",
    "mode",
    "slot",
    "attempt",
    "call_no",
    "essay_a",
    "essay_b",
    "winner",
    "winner_position",
    "win_a",
    "win_b",
    "judge",
    "model",
    "confidence",
    "justification",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_s",
    "status",
    "error_kind",
    "error_message",
    "cached",
    "repeat_index",
    "sent_at",
    "received_at",
)


def _time(value: Any) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive datetimes; they were written in UTC)."""
    if not isinstance(value, datetime):
        return None if value is None else str(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _cost(
    judge: dict[str, Any], tokens_in: int | None, tokens_out: int | None, tokens_cached: int | None
) -> float | None:
    if tokens_in is None and tokens_out is None:
        return None
    cached_price = judge.get("price_cached_input_per_mtok")
    factor = 1.0 - float(judge.get("batch_discount") or 0.0) if judge.get("batch") else 1.0
    return round(
        factor
        * token_cost(
            tokens_in or 0,
            tokens_out or 0,
            tokens_cached or 0,
            price_in=float(judge.get("price_input_per_mtok") or 0.0),
            price_out=float(judge.get("price_output_per_mtok") or 0.0),
            price_cached=None if cached_price is None else float(cached_price),
        ),
        8,
    )


def comparison_rows(data: BatchData, *, successful: bool = False) -> list[dict[str, Any]]:
    """One row per stored attempt (slot, attempt order), or per successful comparison.

    ``winner`` is the winning essay's id and ``winner_position`` ``A`` or ``B``; ``win_a``
    and ``win_b`` are 1/0 for a successful comparison and empty otherwise. ``cost_usd`` is
    the attempt's tokens at the batch's judge prices; a cached answer cost nothing.
    """
    judge = data.batch.judge
    judge_name = data.batch.judge_name
    config = judge_config_from_mapping(judge, f"batch {data.batch.id}: judge")
    models = {m.judge.name: m.judge.model for m in config.panel}
    rows: list[dict[str, Any]] = []
    for attempt in data.attempts:
        if config.panel:  # the member asked (stored; else the panel judge's own choice)
            judge_name = attempt.get("judge") or member_of(
                config,
                data.nodes[attempt["a_idx"]].checksum,
                data.nodes[attempt["b_idx"]].checksum,
                int(attempt.get("repeat_index") or 0),
            )
        ok = attempt["status"] == "success"
        if successful and not ok:
            continue
        position = attempt["winner"] if ok else None
        a_id = data.essay_id(attempt["a_idx"])
        b_id = data.essay_id(attempt["b_idx"])
        cost = (
            0.0
            if attempt.get("cached")
            else _cost(
                judge, attempt["tokens_in"], attempt["tokens_out"], attempt.get("tokens_cached")
            )
        )
        rows.append(
            {
                "batch_id": data.batch.id,
                "wave": attempt["wave"],
                "mode": attempt["mode"],
                "slot": attempt["slot"],
                "attempt": attempt["attempt"],
                "call_no": attempt["call_no"],
                "essay_a": a_id,
                "essay_b": b_id,
                "winner": {"A": a_id, "B": b_id}.get(position or ""),
                "winner_position": position,
                "win_a": None if position is None else int(position == "A"),
                "win_b": None if position is None else int(position == "B"),
                "judge": judge_name,
                "model": models.get(judge_name) or attempt.get("model") or judge.get("model"),
                "confidence": attempt["confidence"],
                "justification": attempt["justification"],
                "tokens_in": attempt["tokens_in"],
                "tokens_out": attempt["tokens_out"],
                "cost_usd": cost,
                "latency_s": attempt["latency_s"],
                "status": attempt["status"],
                "error_kind": attempt["error_kind"],
                "error_message": attempt["error_message"],
                "cached": bool(attempt.get("cached")),
                "repeat_index": attempt.get("repeat_index"),
                "sent_at": _time(attempt["sent_at"]),
                "received_at": _time(attempt["received_at"]),
            }
        )
    return rows


async def build_comparisons(
    store: Store, batch_ref: str, *, successful: bool = False
) -> dict[str, Any]:
    """The export as one object: the batch header and ``comparisons`` (the rows)."""
    data = await load_batch_data(store, batch_ref)
    batch = data.batch
    return {
        "batch_id": batch.id,
        "batch_name": batch.name,
        "status": batch.status,
        "stop_reason": batch.stop_reason,
        "successful_only": successful,
        "columns": list(COMPARISON_COLUMNS),
        "comparisons": comparison_rows(data, successful=successful),
    }
