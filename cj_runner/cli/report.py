"""`cj-report`: reports on a batch (summary for now; more reports join here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cj_runner.cli.common import (
    DB_HELP,
    console,
    dump_json,
    emit_text,
    fail,
    run_async,
    version_callback,
    with_db,
)
from cj_runner.cli.render import summary_renderable
from cj_runner.services.summary import build_summary

app = typer.Typer(
    name="cj-report",
    help="Reports on a batch: summary, fairness, coverage, ranking, grades, HTML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Batch = Annotated[str, typer.Argument(help="Batch id or name.")]
Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]
Fmt = Annotated[str, typer.Option("--format", help="table, json or csv.")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")]


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Reports on a batch: summary, fairness, coverage, ranking, grades, HTML."""


@app.command()
def summary(batch: Batch, fmt: Fmt = "table", output: Output = None, db: Db = None) -> None:
    """The one-screen overview that `cj-run execute` prints at the end."""
    if fmt not in ("table", "json", "csv"):
        raise fail("--format must be table, json or csv")

    async def body() -> dict[str, Any]:
        return await with_db(db, lambda store: build_summary(store, batch), must_exist=True)

    data = run_async(body)
    if fmt == "json":
        emit_text(dump_json(data), output)
    elif fmt == "csv":
        flat = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
        from cj_runner.cli.common import to_csv

        emit_text(to_csv([flat]), output)
    else:
        console.print(summary_renderable(data))


def main() -> None:
    """Console-script entry point."""
    app()
