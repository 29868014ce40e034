"""`cj-anchors`: register anchor essays with known grades, and list them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cj_runner.cli.common import (
    DB_HELP,
    VersionOption,
    console,
    dump_json,
    emit_text,
    err_console,
    fail,
    json_errors,
    open_db,
    run_async,
    to_csv,
    with_db,
)

if TYPE_CHECKING:
    from cj_runner.storage import repository as repo

app = typer.Typer(
    name="cj-anchors",
    help="Register and list anchor essays (essays with known grades) per assignment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]


@app.callback()
def _main(
    version: VersionOption = False,
) -> None:
    """Register and list anchor essays (essays with known grades) per assignment."""
    json_errors(False)


@app.command("register")
def register_cmd(
    path: Annotated[
        Path, typer.Argument(help="Folder with anchors.csv (file,grade), or such a CSV.")
    ],
    assignment_id: Annotated[str, typer.Option(help="Assignment the anchors belong to.")],
    grade_scale: Annotated[
        str, typer.Option(help="Grade scale name from grade_scales.yaml (shipped: eng5, numeric6).")
    ],
    instructions: Annotated[
        Path | None, typer.Option(help="Judge instructions (text file).")
    ] = None,
    student_prompt: Annotated[
        Path | None, typer.Option(help="The task the students were given (text file).")
    ] = None,
    rubric: Annotated[Path | None, typer.Option(help="Marking rubric (text file).")] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Make the assignment's anchors exactly this set (removes others, "
            "allows a new grade or scale).",
        ),
    ] = False,
    db: Db = None,
) -> None:
    """Register anchors; idempotent by text checksum (registering twice changes nothing)."""
    from cj_runner.services.anchors import read_registration, register

    if len(assignment_id) > 200:
        raise fail(f"--assignment-id: at most 200 characters (got {len(assignment_id)})")

    async def body() -> repo.RegisterResult:
        registration = read_registration(
            assignment_id,
            grade_scale,
            path,
            instructions=instructions,
            student_prompt=student_prompt,
            rubric=rubric,
        )
        store = await open_db(db)
        try:
            return await register(store, registration, replace=replace)
        finally:
            await store.close()

    result = run_async(body)
    line = (
        f"assignment {assignment_id}: {result.added} anchor(s) added, "
        f"{result.unchanged} unchanged, {result.removed} removed"
    )
    if result.updated:
        line += "; updated: " + ", ".join(result.updated)
    console.print(line, markup=False, highlight=False)
    if result.kept:
        err_console.print(
            f"note: {result.kept} registered anchor(s) of {assignment_id} are not in this "
            "manifest and were kept (--replace makes the manifest the whole set)",
            markup=False,
        )


@app.command("list")
def list_cmd(
    assignment_id: Annotated[
        str | None, typer.Option(help="Only this assignment's anchors.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    db: Db = None,
) -> None:
    """List registered anchors with their grades."""
    from cj_runner.storage import repository as repo

    if fmt not in ("table", "json", "csv"):
        raise fail("--format must be table, json or csv")
    json_errors(fmt == "json")

    async def body() -> list[repo.AnchorRecord]:
        return await with_db(
            db, lambda store: repo.list_anchors(store, assignment_id), must_exist=True
        )

    anchors = run_async(body)
    rows = [
        {
            "assignment_id": a.assignment_id,
            "anchor_id": a.id,
            "source_name": a.source_name,
            "grade": a.grade,
            "checksum": a.checksum,
            "words": len(a.text.split()),
            "metadata": a.metadata,
        }
        for a in anchors
    ]
    if fmt == "json":
        emit_text(dump_json(rows), None)
        return
    if fmt == "csv":
        emit_text(to_csv(rows, list(rows[0]) if rows else ["assignment_id"]), None)
        return
    table = Table(title="Anchors")
    for col in ("assignment", "id", "file", "grade", "words", "checksum"):
        table.add_column(col)
    for a in anchors:
        table.add_row(
            a.assignment_id,
            str(a.id),
            a.source_name,
            a.grade,
            str(len(a.text.split())),
            a.checksum[:12],
        )
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()
