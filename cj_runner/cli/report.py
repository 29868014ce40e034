"""`cj-report`: reports on a stored batch (summary, fairness, coverage, ranking, grades,
judges, HTML). Every tabular report takes ``--format table|json|csv`` and ``--output FILE``;
BATCH is the batch id or its name."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, RenderableType

from cj_runner.cli.cohort import cohort_report
from cj_runner.cli.common import (
    DB_HELP,
    VersionOption,
    console,
    dump_json,
    emit_text,
    fail,
    json_errors,
    run_async,
    to_csv,
    with_db,
    write_output,
)
from cj_runner.cli.render import summary_renderable
from cj_runner.cli.render_reports import renderable_for
from cj_runner.errors import UserError

if TYPE_CHECKING:
    from types import ModuleType

    from cj_runner.storage import Store


def _reports() -> ModuleType:
    """The report builders, imported on first use so `--help` answers at once."""
    from cj_runner.services import reports

    return reports


app = typer.Typer(
    name="cj-report",
    help=(
        "Reports on a batch: summary, fairness, coverage, ranking, grades, judges, "
        "comparisons, HTML."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FORMATS = ("table", "json", "csv")
TEXT_WIDTH = 120  # width of a table written to --output

Batch = Annotated[str, typer.Argument(help="Batch id or name.")]
Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]
Fmt = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write to this file instead of the terminal."),
]


@app.callback()
def _main(
    version: VersionOption = False,
) -> None:
    """Reports on a batch: summary, fairness, coverage, ranking, grades, judges, comparisons,
    HTML."""
    json_errors(False)


# ---------------------------------------------------------------- output helpers


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise fail(f"--format must be table, json or csv; got {fmt!r}")
    json_errors(fmt == "json")


def _load(db: str | None, body: Callable[[Store], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        return await with_db(db, body, must_exist=True)

    return run_async(run)


def _print_table(renderable: RenderableType, output: Path | None) -> None:
    if output is None:
        console.print(renderable)
        return
    buffer = io.StringIO()
    Console(
        file=buffer, width=TEXT_WIDTH, color_system=None, highlight=False, force_terminal=False
    ).print(renderable)
    emit_text(buffer.getvalue(), output)


def _emit(kind: str, data: dict[str, Any], fmt: str, output: Path | None) -> None:
    if fmt == "json":
        emit_text(dump_json(data), output)
    elif fmt == "csv":
        emit_text(
            to_csv(_reports().report_rows(kind, data), _reports().report_columns(kind, data)),
            output,
        )
    else:
        _print_table(renderable_for(kind, data), output)


def _report(kind: str, batch: str, fmt: str, output: Path | None, db: str | None) -> None:
    _check_format(fmt)
    data = _load(db, lambda store: _reports().build_report(store, kind, batch))
    _emit(kind, data, fmt, output)


# ---------------------------------------------------------------- commands


@app.command()
def summary(batch: Batch, fmt: Fmt = "table", output: Output = None, db: Db = None) -> None:
    """The one-screen overview that `cj-run execute` prints at the end.

    CSV: one row with the scalar fields.
    """
    _check_format(fmt)
    from cj_runner.services.summary import build_summary

    data = _load(db, lambda store: build_summary(store, batch))
    if fmt == "json":
        emit_text(dump_json(data), output)
    elif fmt == "csv":
        flat = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
        emit_text(to_csv([flat], list(flat)), output)
    else:
        _print_table(summary_renderable(data), output)


@app.command()
def fairness(
    batch: Batch,
    mode: Annotated[
        str | None,
        typer.Option(help="Only comparisons of this phase: coverage or resampling."),
    ] = None,
    max_skew: Annotated[
        float | None,
        typer.Option(
            help="CI gate: exit 1 (after printing the report) when any node's A/B skew "
            "is above this.",
            min=0.0,
        ),
    ] = None,
    fmt: Fmt = "table",
    output: Output = None,
    db: Db = None,
) -> None:
    """Position fairness: A/B balance per node and the judge's position bias.

    A/B counts and skew per node, nodes never in A or B, edges that miss their complement,
    flip rate, the judge's A-win share (95% interval) and the fitted order effect.
    CSV: one row per node.
    """
    _check_format(fmt)
    try:
        selected = _reports().parse_mode(mode)
    except UserError as exc:
        raise fail(str(exc)) from None
    data = _load(
        db,
        lambda store: _reports().build_report(
            store, "fairness", batch, mode=selected, max_skew=max_skew
        ),
    )
    _emit("fairness", data, fmt, output)
    above = data["nodes_above_max_skew"]
    if above:
        shown = ", ".join(above[:10]) + (f" and {len(above) - 10} more" if len(above) > 10 else "")
        json_errors(False)  # the report on stdout is the JSON; the gate's verdict is stderr
        raise fail(f"{len(above)} node(s) have an A/B skew above {max_skew}: {shown}", 1)


@app.command()
def coverage(batch: Batch, fmt: Fmt = "table", output: Output = None, db: Db = None) -> None:
    """Coverage of the comparison graph, budget use, failures and the per-wave history.

    Pairs compared, resampling passes, comparisons per node, connected components, calls
    sent vs budget, failures by kind, stop reason, and per wave its mode, size, largest
    score change and SSR. CSV: one row per wave.
    """
    _report("coverage", batch, fmt, output, db)


@app.command()
def ranking(batch: Batch, fmt: Fmt = "table", output: Output = None, db: Db = None) -> None:
    """Nodes by score with 95% intervals, fit statistics and misfits.

    Rank, score, SE, 95% interval, comparisons, wins, infit/outfit with misfits flagged;
    anchors marked with their grade; SSR in the header. CSV: one row per node.
    """
    _report("ranking", batch, fmt, output, db)


@app.command()
def grades(batch: Batch, fmt: Fmt = "table", output: Output = None, db: Db = None) -> None:
    """Projected grades with their probabilities, and the anchors' calibration.

    Per student: grade, confidence, probability per grade and expected grade; the anchors'
    scores and bands, the grade boundaries, anchor warnings and deferred reasons.
    CSV: one row per student with a p_<grade> column per grade.
    """
    _report("grades", batch, fmt, output, db)


@app.command()
def comparisons(
    batch: Batch,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="csv (default), json or jsonl.")
    ] = "csv",
    successful: Annotated[
        bool,
        typer.Option("--successful", help="Only successful comparisons (one row per answer)."),
    ] = False,
    output: Output = None,
    db: Db = None,
) -> None:
    """Every judge call of the batch, one row each: essays, positions, winner, judge.

    Columns: batch_id, wave, mode, slot, attempt, call_no, essay_a, essay_b, winner (essay
    id), winner_position (A/B), win_a, win_b (1/0), judge, model, confidence,
    justification, tokens_in, tokens_out, cost_usd, latency_s, status, error_kind,
    error_message, cached, repeat_index, sent_at, received_at. essay_a, essay_b, win_a,
    win_b are BradleyTerry2's player1, player2, win1, win2 (see docs/reports.md for R and
    pandas). --successful keeps only the successful comparisons.
    """
    if fmt not in ("csv", "json", "jsonl"):
        raise fail(f"--format must be csv, json or jsonl; got {fmt!r}")
    json_errors(fmt in ("json", "jsonl"))
    from cj_runner.services.export import COMPARISON_COLUMNS, build_comparisons

    data = _load(db, lambda store: build_comparisons(store, batch, successful=successful))
    rows = data["comparisons"]
    if fmt == "json":
        emit_text(dump_json(data), output)
    elif fmt == "jsonl":
        emit_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), output)
    else:
        emit_text(to_csv(rows, list(COMPARISON_COLUMNS)), output)


@app.command()
def html(
    batch: Batch,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="HTML file to write (default: report-<batch id>.html)."
        ),
    ] = None,
    db: Db = None,
) -> None:
    """One self-contained HTML page with plots and every report table.

    Scores with 95% intervals, anchors and grade boundaries; A/B counts per node;
    convergence over waves; the degree distribution; the ranking, grades, fairness and
    coverage tables. Plots are embedded: the page needs no network.
    """

    # matplotlib is imported only when an HTML report is asked for
    from cj_runner.services.html_report import build_html
    from cj_runner.storage import repository as repo

    async def body(store: Store) -> tuple[str, str]:
        record = await repo.find_batch(store, batch)
        return record.id, await build_html(store, record.id)

    batch_id, page = _load(db, body)
    target = output if output is not None else Path(f"report-{batch_id}.html")
    write_output(target, page)


@app.command()
def judges(
    batch: Batch,
    misfit: Annotated[
        str,
        typer.Option(
            help="What the reliability comparison does with flagged judges: exclude, "
            "downweight (weight 1/infit) or keep."
        ),
    ] = "exclude",
    fmt: Fmt = "table",
    output: Output = None,
    db: Db = None,
) -> None:
    """The judges on one scale: order effect, misfit, agreement, kappa, reliability.

    Every judge of the batch (panel judges and imported ones) on one Bradley-Terry scale
    with a position-A effect per judge: its comparisons, order effect and position bias
    (percentage points, 95% interval), held-out infit/outfit and their ZSTD, a misfit
    flag, agreement with the consensus; Cohen's kappa of every two judges on shared
    edges; the reliability with every judge and with the flagged ones excluded or
    down-weighted. CSV: one row per judge.
    """
    _check_format(fmt)
    from cj_runner.services.panels import (
        JUDGE_CSV_COLUMNS,
        MISFIT_ACTIONS,
        judges_report,
        judges_rows,
        panel_inputs,
    )

    if misfit not in MISFIT_ACTIONS:
        raise fail(f"--misfit must be exclude, downweight or keep; got {misfit!r}")

    async def body(store: Store) -> dict[str, Any]:
        return judges_report(await panel_inputs(store, batch), action=misfit)

    data = _load(db, body)
    if fmt == "json":
        emit_text(dump_json(data), output)
    elif fmt == "csv":
        emit_text(to_csv(judges_rows(data), list(JUDGE_CSV_COLUMNS)), output)
    else:
        from cj_runner.cli.render_judges import judges_renderable

        _print_table(judges_renderable(data), output)


app.command("cohort")(cohort_report)


def main() -> None:
    """Console-script entry point."""
    app()
