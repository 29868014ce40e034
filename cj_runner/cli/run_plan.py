"""`cj-run plan`, `cj-run dry-run` and `cj-run list`: what a batch would ask, and the
batches stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.common import (
    console,
    dump_json,
    emit_text,
    json_errors,
    open_db,
    run_async,
    with_db,
)
from cj_runner.cli.run_options import (
    AssignmentId,
    BatchApi,
    Db,
    Format,
    Inventory,
    Judge,
    JudgeBaseUrl,
    JudgeMaxTokens,
    JudgeModel,
    JudgeTemperature,
    MaxComparisons,
    Profile,
    Sets,
    batch_request,
    check_format,
)
from cj_runner.cli.run_support import check_judge_lines, print_check
from cj_runner.errors import UserError

if TYPE_CHECKING:
    from cj_runner.services.batches import RunRequest
    from cj_runner.storage import Store
    from cj_runner.storage import repository as repo

# Heavy modules (numpy, scipy, SQLAlchemy, Alembic, httpx) are imported inside the
# commands, so `--help` and errors on bad arguments come back at once.


def plan(
    inventory: Inventory,
    assignment_id: AssignmentId = None,
    profile: Profile = None,
    judge: Judge = None,
    max_comparisons: MaxComparisons = None,
    sets: Sets = None,
    judge_model: JudgeModel = None,
    judge_temperature: JudgeTemperature = None,
    judge_max_tokens: JudgeMaxTokens = None,
    judge_base_url: JudgeBaseUrl = None,
    batch_api: BatchApi = False,
    db: Db = None,
    fmt: Format = "table",
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Also check the judge: its key variable is set and its server answers "
            "(one free GET /models; not counted against any budget).",
        ),
    ] = False,
) -> None:
    """Show what a batch would do: nodes, anchors, budget, nC2, waves, tokens and cost.

    Reads inputs and the assignment's anchors; writes nothing; calls no judge (with
    --check, one free request checks the judge's key and server).
    """
    from cj_runner.cli.render import plan_table
    from cj_runner.services.batches import plan_summary, prepare, prepare_local
    from cj_runner.storage import resolve_db_url
    from cj_runner.storage.engine import sqlite_path

    check_format(fmt, ("table", "json"))
    json_errors(fmt == "json")
    request = batch_request(
        inventory,
        assignment_id,
        profile,
        judge,
        max_comparisons,
        sets,
        judge_model=judge_model,
        judge_temperature=judge_temperature,
        judge_max_tokens=judge_max_tokens,
        judge_base_url=judge_base_url,
        batch_api=batch_api,
    )

    async def body() -> dict[str, Any]:
        local = prepare_local(request)
        url = resolve_db_url(db)
        path = sqlite_path(url)
        if assignment_id is None or (path is not None and not path.exists()):
            summary = plan_summary(await prepare(None, request, local))
        else:
            summary = await with_db(db, lambda store: _plan_with_store(store, request, local))
        if check:
            summary["judge_check"] = await check_judge_lines(local.judge_config)
        return summary

    result = run_async(body)
    if check and fmt != "json":
        print_check(result["judge_check"])
    if fmt == "json":
        emit_text(dump_json(result), None)
    else:
        console.print(plan_table(result))


async def _plan_with_store(store: Store, request: RunRequest, local: Any) -> dict[str, Any]:
    from cj_runner.services.batches import plan_summary, prepare

    return plan_summary(await prepare(store, request, local))


def dry_run(
    inventory: Inventory,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Folder for the request envelope.")
    ] = Path("cj_dry_run"),
    assignment_id: AssignmentId = None,
    profile: Profile = None,
    judge: Judge = None,
    max_comparisons: MaxComparisons = None,
    seed: Annotated[int | None, typer.Option(help="Batch seed (SEED).")] = None,
    sets: Sets = None,
    batch_name: Annotated[str | None, typer.Option(help="Name for the batch.")] = None,
    db: Db = None,
) -> None:
    """Check everything and write the first wave's prompts; no judge call is paid for.

    Writes the request envelope (settings, nodes, first-wave prompts) as JSON; nothing
    is stored in the database."""
    from cj_runner.services.batches import plan_summary, prepare, prepare_local
    from cj_runner.services.dry_run import write_envelope

    request = batch_request(
        inventory,
        assignment_id,
        profile,
        judge,
        max_comparisons,
        sets,
        seed=seed,
        batch_name=batch_name,
    )

    async def body() -> Path:
        local = prepare_local(request)
        print_check(await check_judge_lines(local.judge_config))
        if assignment_id is None:
            prepared = await prepare(None, request, local)
        else:
            store = await open_db(db, must_exist=True)
            try:
                prepared = await prepare(store, request, local)
            finally:
                await store.close()
        try:
            return write_envelope(prepared, plan_summary(prepared), output_dir)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UserError(
                f"--output-dir {output_dir}: cannot write the envelope: {reason}"
            ) from None

    path = run_async(body)
    console.print(f"wrote {path}")


def list_batches(
    db: Db = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """List the batches in the database, newest first (ids are never cut short)."""
    from cj_runner.cli.common import to_csv
    from cj_runner.storage import repository as repo

    check_format(fmt, ("table", "json", "csv"))
    json_errors(fmt == "json")

    async def body() -> list[repo.BatchRecord]:
        return await with_db(db, repo.list_batches, must_exist=True)

    batches = run_async(body)
    rows = [
        {
            "batch_id": b.id,
            "name": b.name,
            "status": b.status,
            "stop_reason": b.stop_reason,
            "assignment_id": b.assignment_id,
            "judge": b.judge_name,
            "calls_sent": b.state.get("calls_sent"),
            "total_budget": b.state.get("total_budget"),
            "created_at": b.created_at.isoformat(timespec="seconds"),
        }
        for b in batches
    ]
    if fmt == "json":
        emit_text(dump_json(rows), None)
        return
    if fmt == "csv":
        emit_text(to_csv(rows, list(rows[0]) if rows else ["batch_id"]), None)
        return
    from rich.table import Table

    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold underline")
    # ids and names are what users copy into other commands: never wrapped or cut
    for col in ("batch_id", "name"):
        longest = max((len(r[col] or "") for r in rows), default=0)
        table.add_column(col, no_wrap=True, min_width=max(longest, len(col)))
    for col in ("status", "stop", "calls", "judge", "created (UTC)"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["batch_id"],
            r["name"] or "",
            r["status"],
            r["stop_reason"] or "",
            f"{r['calls_sent']}/{r['total_budget']}",
            r["judge"],
            str(r["created_at"]).replace("T", " ")[:16],
        )
    console.print(table)
