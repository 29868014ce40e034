"""Cohort commands: `cj-run enqueue`, `cj-run worker` and `cj-report cohort`.

The functions are plain typer commands; :mod:`cj_runner.cli.run` and
:mod:`cj_runner.cli.report` register them on their apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.common import (
    DB_HELP,
    console,
    dump_json,
    emit_text,
    err_console,
    fail,
    open_db,
    run_async,
    to_csv,
    with_db,
)

if TYPE_CHECKING:
    from cj_runner.services.cohorts import EnqueueResult
    from cj_runner.services.worker import WorkerResult
    from cj_runner.storage import Store

Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]
CohortName = Annotated[
    str, typer.Option("--cohort", help="Cohort name (prefix of the batch names cohort/class).")
]


def enqueue(
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder with one sub-folder or manifest (.csv/.jsonl) per class, or a "
            "cohort CSV with columns class_id,inventory."
        ),
    ],
    cohort: CohortName,
    assignment_id: Annotated[
        str | None,
        typer.Option(help="Assignment whose anchors, instructions and rubric join every class."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(help="CJ profile (the batch's settings and judge): a name or a YAML path."),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="Judge profile name or YAML path; overrides the profile's judge."),
    ] = None,
    max_comparisons: Annotated[
        int | None, typer.Option(help="Budget of each class's batch (MAX_PAIRWISE_COMPARISONS).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every batch (SEED).")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: NAME=VALUE (repeatable)."),
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Override the judge's model.")] = None,
    judge_base_url: Annotated[
        str | None,
        typer.Option(envvar="CJ_JUDGE_BASE_URL", help="Override the judge's base URL."),
    ] = None,
    db: Db = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Queue a cohort: one batch per class, sharing assignment, profile and judge.

    Every class is read and checked first; on any bad input nothing is queued (exit 2).
    Run the queue with `cj-run worker` (on PostgreSQL, on as many machines as you like).
    """
    from cj_runner.services.batches import JudgeOverrides, RunRequest
    from cj_runner.services.cohorts import cohort_inputs, enqueue_cohort

    flags: dict[str, Any] = {"MAX_PAIRWISE_COMPARISONS": max_comparisons, "SEED": seed}
    request = RunRequest(
        inventory=source,
        assignment_id=assignment_id,
        profile=profile,
        judge=judge,
        overrides=tuple(sets or ()),
        flag_values={k: v for k, v in flags.items() if v is not None},
        judge_overrides=JudgeOverrides(model=judge_model, base_url=judge_base_url),
    )

    async def body() -> EnqueueResult:
        # names, folders, profile and judge fail before a database is opened
        inputs = cohort_inputs(cohort, source, request)
        return await with_db(db, lambda store: enqueue_cohort(store, inputs, request))

    result = run_async(body)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if as_json:
        emit_text(
            dump_json(
                {
                    "cohort": result.cohort,
                    "queued": len(result.batch_ids),
                    "students": result.students,
                    "profile": result.profile,
                    "judge": result.judge,
                    "batches": [
                        {"class_id": c.class_id, "batch_id": b, "inventory": str(c.inventory)}
                        for c, b in zip(result.classes, result.batch_ids, strict=True)
                    ],
                }
            ),
            None,
        )
        return
    console.print(
        f"cohort {result.cohort}: {len(result.batch_ids)} batch(es) queued, "
        f"{result.students} students (profile {result.profile}, judge {result.judge})",
        markup=False,
    )


def worker(
    db: Db = None,
    cohort: Annotated[
        str | None, typer.Option("--cohort", help="Only batches of this cohort.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="When the queue is empty, wait for new batches."),
    ] = False,
    poll: Annotated[
        float, typer.Option(help="Seconds between looks at an empty queue.", min=0.01)
    ] = 2.0,
    stale_after: Annotated[
        float,
        typer.Option(
            envvar="CJ_WORKER_STALE_S",
            min=0.01,
            help="Seconds without a heartbeat after which a worker's batch is taken over "
            "(the worker beats every third of it; use the same value on every worker).",
        ),
    ] = 30.0,
    max_batches: Annotated[
        int | None, typer.Option(help="Stop after running this many batches.", min=1)
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not reuse stored answers (judgment cache).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per batch.")] = False,
) -> None:
    """Run queued batches until the queue is empty (or, with --follow, forever).

    Claims the oldest queued batch, runs it to its stop, takes the next. Several workers
    share one PostgreSQL queue and one rate limit; a batch whose worker died is taken
    over once its heartbeat is older than --stale-after. Exit 0 when the queue is done,
    130 when interrupted (the batch in hand goes back to the queue).
    """
    from cj_runner.services.worker import Worker, WorkerOptions

    options = WorkerOptions(
        cohort=cohort,
        follow=follow,
        poll_s=poll,
        stale_after_s=stale_after,
        use_cache=not no_cache,
        max_batches=max_batches,
    )

    def notify(message: str) -> None:
        if not quiet:
            err_console.print(message, markup=False, soft_wrap=True)

    async def body() -> WorkerResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        store = await open_db(db)
        try:
            runner = Worker(store, options, stop_event=stop, notify=notify)
            notify(f"worker {runner.worker_id} started")
            return await runner.run()
        finally:
            await store.close()

    result = run_async(body)
    done = sum(1 for _, status in result.batches if status == "COMPLETED")
    notify(
        f"worker {result.worker} {'interrupted' if result.interrupted else 'done'}: "
        f"{len(result.batches)} batch(es) run, {done} completed"
    )
    if result.interrupted:
        raise typer.Exit(130)


def cohort_report(
    cohort: Annotated[
        str | None,
        typer.Argument(help="Cohort name (optional when the database holds one cohort)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of the terminal."),
    ] = None,
    db: Db = None,
) -> None:
    """A cohort's classes: done, failed, running and queued; grades, cost and reliability.

    Per class: state, stop reason, students, calls, success rate, SSR (and the robust
    reliability when computed), cost and the projected grade distribution; then the
    whole cohort. CSV: one row per class with a grade_<G> column per grade.
    """
    if fmt not in ("table", "json", "csv"):
        raise fail(f"--format must be table, json or csv; got {fmt!r}")
    from cj_runner.services.cohort_report import build_cohort_report, cohort_csv_rows

    async def body() -> dict[str, Any]:
        async def build(store: Store) -> dict[str, Any]:
            return await build_cohort_report(store, cohort)

        return await with_db(db, build, must_exist=True)

    report = run_async(body)
    if fmt == "json":
        emit_text(dump_json(report), output)
    elif fmt == "csv":
        rows, columns = cohort_csv_rows(report)
        emit_text(to_csv(rows, columns), output)
    else:
        from cj_runner.cli.report import _print_table

        _print_table(_cohort_table(report), output)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cohort_table(report: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    counts = report["counts"]
    overall = report["overall"]
    grades = report["grade_scale"]
    title = f"Cohort {report['cohort']}: {report['classes']} classes - " + ", ".join(
        f"{counts[s]} {s}" for s in ("done", "failed", "running", "queued")
    )
    table = Table(title=title, title_justify="left", pad_edge=False)
    table.add_column("class")
    table.add_column("state")
    table.add_column("stop", min_width=14)
    for col in ("essays", "calls", "success", "SSR", "cost $"):
        table.add_column(col, justify="right")
    for g in grades:
        table.add_column(g, justify="right")
    for c in report["per_class"]:
        table.add_row(
            c["class_id"],
            c["state"],
            c["stop_reason"] or "",
            _fmt(c["students"]),
            str(c["calls_sent"]),
            _fmt(c["success_rate"]),
            _fmt(c["ssr"]),
            _cost(c),
            *(str(c["grades"][g]) for g in grades),
        )
    table.add_section()
    table.add_row(
        "all",
        "",
        "",
        _fmt(overall["students"]),
        str(overall["calls_sent"]),
        "",
        _fmt(overall["ssr_mean"]),
        _cost(overall),
        *(str(overall["grades"][g]) for g in grades),
    )
    notes = ["SSR of the 'all' row: mean over done classes"]
    if overall["unknown_cost_calls"]:
        n = overall["unknown_cost_calls"]
        notes.append(
            f"cost ≥: {n} call{'' if n == 1 else 's'} with unknown cost (sent, answer never "
            "received; the provider may have billed them)"
        )
    return Group(table, *notes)


def _cost(row: dict[str, Any]) -> str:
    """The cost column: a lower bound (``≥``) when some calls' cost is unknown."""
    text = _fmt(row["cost_usd"], 4)
    return f"≥{text}" if row["unknown_cost_calls"] else text
