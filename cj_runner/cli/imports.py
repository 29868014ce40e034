"""`cj-run import`: add judgments made outside cj-runner (a human panel, another tool) to a
batch, or start a new batch over an inventory from them; every row is checked before
anything is stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.common import DB_HELP, dump_json, emit_text, json_errors, run_async

if TYPE_CHECKING:
    from cj_runner.judgment_files import JudgmentFile
    from cj_runner.storage import Store

Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]


def import_judgments(
    batch: Annotated[
        str,
        typer.Argument(help="Batch id or name; with --inventory, the name of a new batch."),
    ],
    judgments: Annotated[
        Path,
        typer.Argument(
            help="CSV with essay_a, essay_b, winner (A, B or the winning essay id), judge "
            "and optionally time (ISO 8601).",
            show_default=False,
        ),
    ],
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            "-i",
            help="Start a new batch named BATCH over this inventory (as `execute` would, "
            "without asking any judge) and import the judgments into it.",
        ),
    ] = None,
    assignment_id: Annotated[
        str | None, typer.Option(help="With --inventory: the assignment whose anchors join.")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="With --inventory: the new batch's CJ profile.")
    ] = None,
    judge: Annotated[
        list[str] | None,
        typer.Option(
            help="With --inventory: the judge (or, repeated, the panel) that `cj-run resume "
            "BATCH` would ask later."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    db: Db = None,
) -> None:
    """Add human or external judgments to a batch, with their provenance.

    Every row is checked first (unknown essay ids, an essay paired with itself, a winner
    that is not A, B or one of the two essays, an empty judge id, a judge id of the
    batch's own judges, a bad time); one bad row refuses the whole file (exit 2, nothing
    stored). The same file cannot be imported twice into one batch. Imported judgments
    never count against the budget; `cj-report judges` puts them on one scale with the
    batch's own comparisons. With --inventory a new batch is created (status CREATED, no
    judge asked) holding only the imports; `cj-run resume BATCH` can add its judge's
    comparisons later.
    """
    from cj_runner.cli.common import fail

    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json; got {fmt!r}")
    json_errors(fmt == "json")
    if inventory is None and (assignment_id or profile or judge):
        raise fail("--assignment-id, --profile and --judge go with --inventory (a new batch)")

    async def body() -> dict[str, Any]:
        from cj_runner.cli.common import open_db

        store = await open_db(db, must_exist=inventory is None)
        try:
            if inventory is None:
                return await _import(store, batch, judgments)
            return await _import_new(
                store, batch, judgments, inventory, assignment_id, profile, judge
            )
        finally:
            await store.close()

    result = run_async(body)
    if fmt == "json":
        emit_text(dump_json(result), None)
        return
    judges = ", ".join(f"{name} ({count})" for name, count in result["judges"].items())
    # plain lines, never wrapped: ids are copied from here into other commands
    new = " (new)" if result["new_batch"] else ""
    typer.echo(
        f"imported {result['imported']} judgment(s) from {result['file']} into batch "
        f"{result['batch_id']}{new}: {judges}"
    )
    typer.echo(f"cj-report judges {result['batch_id']} shows every judge on one scale")


def _rows(checked: JudgmentFile) -> list[dict[str, Any]]:
    return [
        {
            "a_idx": j.a_idx,
            "b_idx": j.b_idx,
            "winner": j.winner,
            "judge": j.judge,
            "judged_at": j.judged_at,
            "row": j.row,
            "metadata": j.metadata,
        }
        for j in checked.judgments
    ]


def _summary(batch_id: str, checked: JudgmentFile, when: Any, new: bool) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for j in checked.judgments:
        counts[j.judge] = counts.get(j.judge, 0) + 1
    return {
        "batch_id": batch_id,
        "new_batch": new,
        "file": checked.name,
        "sha256": checked.checksum,
        "imported": len(checked.judgments),
        "judges": counts,
        "imported_at": when.isoformat(timespec="seconds"),
    }


async def _import(store: Store, batch_ref: str, path: Path) -> dict[str, Any]:
    from cj_runner.judgment_files import read_judgments
    from cj_runner.services.batches import stored_judge_config
    from cj_runner.storage import repository as repo
    from cj_runner.storage.imports import store_imported

    record = await repo.find_batch(store, batch_ref)
    nodes = await repo.load_nodes(store, record.id)
    config = stored_judge_config(record)
    own = {record.judge_name, *(m.judge.name for m in config.panel)}
    checked = read_judgments(
        path,
        {n.essay_id: n.idx for n in nodes},
        reserved_judges=sorted(own),
        batch=f"batch {record.id}",
    )
    when = await store_imported(
        store,
        record.id,
        _rows(checked),
        source_name=checked.name,
        source_checksum=checked.checksum,
    )
    return _summary(record.id, checked, when, new=False)


async def _import_new(
    store: Store,
    name: str,
    path: Path,
    inventory: Path,
    assignment_id: str | None,
    profile: str | None,
    judge: list[str] | None,
) -> dict[str, Any]:
    from sqlalchemy.exc import IntegrityError

    from cj_runner.errors import InputError, NotFoundError
    from cj_runner.judgment_files import read_judgments
    from cj_runner.services.batches import (
        RunRequest,
        batch_fields,
        plan_summary,
        prepare,
    )
    from cj_runner.storage import repository as repo
    from cj_runner.storage.imports import insert_imported

    try:
        existing = await repo.find_batch(store, name)
    except NotFoundError:
        existing = None
    if existing is not None:
        raise InputError(
            f"--inventory: batch {name!r} already exists ({existing.id}); leave out "
            "--inventory to import into it"
        )
    request = RunRequest(
        inventory=inventory,
        assignment_id=assignment_id,
        profile=profile,
        judge=tuple(judge) if judge else None,
        batch_name=name,
    )
    prepared = await prepare(store, request)
    own = {prepared.judge_config.name, *(m.judge.name for m in prepared.judge_config.panel)}
    checked = read_judgments(
        path,
        {node.essay_id: k for k, node in enumerate(prepared.nodes)},
        reserved_judges=sorted(own),
        batch=f"the inventory {inventory}",
    )
    fields = batch_fields(prepared, plan_summary(prepared))
    try:
        # the batch and its judgments land together, or neither does
        async with store.engine.begin() as conn:
            batch_id = await repo.insert_batch(conn, **fields)
            when = await insert_imported(
                conn,
                batch_id,
                _rows(checked),
                source_name=checked.name,
                source_checksum=checked.checksum,
            )
    except IntegrityError as exc:
        raise InputError(f"batch {name!r}: could not be created ({exc.orig})") from None
    return _summary(batch_id, checked, when, new=True)
