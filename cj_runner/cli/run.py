"""`cj-run`: plan, dry-run, execute, resume and list batches; the convergence harness;
the mock judge served over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.cohort import enqueue, worker
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
    with_db,
)
from cj_runner.cli.imports import import_judgments
from cj_runner.cli.run_support import LogFile, Verbose, call_log, check_judge_lines, print_check
from cj_runner.errors import CJError, UserError

if TYPE_CHECKING:
    from cj_runner.services.batches import RunRequest
    from cj_runner.services.calllog import CallLog
    from cj_runner.services.executor import RunResult
    from cj_runner.storage import Store
    from cj_runner.storage import repository as repo

# Heavy modules (numpy, scipy, SQLAlchemy, Alembic, httpx) are imported inside the
# commands, so `--help` and errors on bad arguments come back at once.


APP_HELP = (
    "Run Comparative Judgement batches with an LLM (or mock) judge.\n\n"
    "Two kinds of profile: a CJ profile (--profile NAME or FILE.yaml) holds a batch's "
    "settings (budget, wave size, stopping rules) and may name a judge; a judge profile "
    "(--judge NAME or FILE.yaml) says who answers: the API kind, model, base URL, prices, "
    "rate limits and the NAME of the environment variable holding the key. --judge "
    "overrides the CJ profile's judge. Shipped judge profiles: openai, anthropic, "
    "local_openai_compatible, mock_default, mock_panel, mock_server."
)

app = typer.Typer(
    name="cj-run",
    help=APP_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_FOR_STATUS = {"COMPLETED": 0, "FAILED": 1, "INTERRUPTED": 130}

# ---------------------------------------------------------------- shared options

Inventory = Annotated[
    Path,
    typer.Option(
        "--inventory",
        "-i",
        help="Essays: a folder of .txt/.md files, or a CSV/JSONL manifest "
        "(essay_id + text or path).",
    ),
]
AssignmentId = Annotated[
    str | None,
    typer.Option(help="Assignment whose anchors, instructions and rubric join the batch."),
]
Profile = Annotated[
    str | None,
    typer.Option(help="CJ profile (the batch's settings and judge): a name or a YAML path."),
]
Judge = Annotated[
    list[str] | None,
    typer.Option(
        help="Judge profile name or YAML path; overrides the profile's judge. Repeat it "
        "for a panel of judges in one batch, each with an optional share of the calls: "
        "--judge A:0.9 --judge B:0.1."
    ),
]
MaxComparisons = Annotated[
    int | None,
    typer.Option(help="Batch budget: most judge calls (MAX_PAIRWISE_COMPARISONS)."),
]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting: NAME=VALUE (repeatable)."),
]
Db = Annotated[str | None, typer.Option("--db", help=DB_HELP)]
Format = Annotated[str, typer.Option("--format", help="Output format: table or json.")]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Do not reuse stored answers (judgment cache).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print the summary as one JSON object (--format json).")
]
SummaryFormat = Annotated[
    str, typer.Option("--format", help="The summary as a table or as one JSON object (json).")
]

JudgeModel = Annotated[str | None, typer.Option(help="Override the judge's model.")]
BatchApi = Annotated[
    bool,
    typer.Option(
        "--batch-api",
        help="Send each wave as one provider batch job (OpenAI Batch, Anthropic Message "
        "Batches): half price, answers within 24 hours (the judge profile's batch: true).",
    ),
]
JudgeTemperature = Annotated[float | None, typer.Option(help="Override the judge's temperature.")]
JudgeMaxTokens = Annotated[int | None, typer.Option(help="Override the judge's max output tokens.")]
JudgeBaseUrl = Annotated[
    str | None,
    typer.Option(envvar="CJ_JUDGE_BASE_URL", help="Override the judge's base URL."),
]


def _summary_json(fmt: str, as_json: bool) -> bool:
    """``--format table|json`` with ``--json`` as its alias; JSON errors with JSON output."""
    _check_format(fmt, ("table", "json"))
    wanted = as_json or fmt == "json"
    json_errors(wanted)
    return wanted


def _request(
    inventory: Path,
    assignment_id: str | None,
    profile: str | None,
    judge: list[str] | None,
    max_comparisons: int | None,
    sets: list[str] | None,
    *,
    seed: int | None = None,
    passes_small: int | None = None,
    passes_regular: int | None = None,
    no_resampling: bool = False,
    judge_model: str | None = None,
    judge_temperature: float | None = None,
    judge_max_tokens: int | None = None,
    judge_base_url: str | None = None,
    batch_name: str | None = None,
    batch_api: bool = False,
) -> RunRequest:
    from cj_runner.services.batches import JudgeOverrides, RunRequest

    flags: dict[str, Any] = {
        "MAX_PAIRWISE_COMPARISONS": max_comparisons,
        "SEED": seed,
        "MAX_RESAMPLING_PASSES_FOR_SMALL_NET": 0 if no_resampling else passes_small,
        "MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH": 0 if no_resampling else passes_regular,
    }
    return RunRequest(
        inventory=inventory,
        assignment_id=assignment_id,
        profile=profile,
        judge=tuple(judge) if judge else None,
        overrides=tuple(sets or ()),
        flag_values={k: v for k, v in flags.items() if v is not None},
        judge_overrides=JudgeOverrides(
            model=judge_model,
            temperature=judge_temperature,
            max_tokens=judge_max_tokens,
            base_url=judge_base_url,
            batch=True if batch_api else None,
        ),
        batch_name=batch_name,
    )


@app.callback()
def _main(
    version: VersionOption = False,
) -> None:
    """Run Comparative Judgement batches with an LLM (or mock) judge (see --help)."""
    json_errors(False)


# ---------------------------------------------------------------- plan


@app.command()
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

    _check_format(fmt, ("table", "json"))
    json_errors(fmt == "json")
    request = _request(
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


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise fail(f"--format must be one of {', '.join(allowed)}")


# ---------------------------------------------------------------- dry-run


@app.command("dry-run")
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

    request = _request(
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


# ---------------------------------------------------------------- execute / resume


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _batch_context(store: Store, batch_id: str) -> dict[str, Any]:
    """A stored batch with its nodes, settings, assignment text and grade scale."""
    from cj_runner.config import settings_from_stored
    from cj_runner.storage import repository as repo

    batch = await repo.find_batch(store, batch_id)
    nodes = await repo.load_nodes(store, batch.id)
    settings = settings_from_stored(batch.settings)
    assignment_text = None
    scale = None
    if batch.assignment_id is not None:
        from cj_runner.config import load_grade_scale
        from cj_runner.judges.base import AssignmentText

        assignment = await repo.get_assignment(store, batch.assignment_id)
        if assignment is not None:
            assignment_text = AssignmentText(
                assignment.instructions, assignment.student_prompt, assignment.rubric
            )
            if any(n.is_anchor for n in nodes):
                scale = load_grade_scale(assignment.grade_scale)
    return {
        "batch": batch,
        "nodes": nodes,
        "settings": settings,
        "assignment": assignment_text,
        "grade_scale": scale,
    }


async def _run_batch(
    store: Store, batch_id: str, *, quiet: bool, use_cache: bool, log: CallLog | None = None
) -> tuple[RunResult, dict[str, Any]]:
    from cj_runner.cli.render import ProgressView
    from cj_runner.judges.registry import build_batch_api, build_judge
    from cj_runner.services.batches import stored_judge_config
    from cj_runner.services.executor import BatchExecutor
    from cj_runner.services.summary import build_summary

    context = await _batch_context(store, batch_id)
    batch = context["batch"]
    judge_config = stored_judge_config(batch)
    judge = build_judge(judge_config)
    batch_api = build_batch_api(judge)
    stop = asyncio.Event()
    _install_signals(stop)
    show_progress = not quiet and err_console.is_terminal
    view = ProgressView(err_console) if show_progress else None
    executor = BatchExecutor(
        store,
        batch,
        context["nodes"],
        judge,
        context["settings"],
        assignment=context["assignment"],
        grade_scale=context["grade_scale"],
        progress=view,
        use_cache=use_cache,
        stop_event=stop,
        call_log=log,
        batch_api=batch_api,
        batch_poll_s=judge_config.batch_poll_s,
    )
    if log is not None:
        log.note(
            f"batch {batch.id}: judge {judge.name} ({judge.model}) {getattr(judge, 'url', '')}"
        )
    try:
        with view if view is not None else contextlib.nullcontext():
            result = await executor.run()
    except UserError:
        raise
    except Exception as exc:
        # never a traceback and never a silent RUNNING batch: what was answered is stored
        # and the rest is asked again by a resume (calls in flight count as lost)
        detail = " ".join(str(exc).split())[:300]
        raise CJError(
            f"batch {batch.id} stopped: {type(exc).__name__}: {detail}; the answers so far "
            f"are stored. Resume with: cj-run resume {batch.id}"
        ) from None
    finally:
        await judge.aclose()
        if batch_api is not None:
            await batch_api.aclose()
    return result, await build_summary(store, batch.id)


def _report_run(result: RunResult, summary: dict[str, Any], *, as_json: bool, quiet: bool) -> None:
    from cj_runner.cli.render import summary_renderable

    if as_json:
        emit_text(dump_json(summary), None)
    elif not quiet:
        console.print(summary_renderable(summary))
    if result.unreachable:
        json_errors(False)  # the summary above is the JSON output; the error goes to stderr
        raise fail(
            f"{result.unreachable}; the batch stopped at once (INTERRUPTED, nothing else "
            f"sent): fix the server or start again with the right --judge-base-url; "
            f"cj-run resume {result.batch_id} continues it once the server answers"
        )
    if result.interrupted:
        err_console.print(
            f"interrupted: answers so far are stored. Resume with: cj-run resume {result.batch_id}"
        )
    raise typer.Exit(EXIT_FOR_STATUS.get(result.status, 1))


@app.command()
def execute(
    inventory: Inventory,
    assignment_id: AssignmentId = None,
    profile: Profile = None,
    judge: Judge = None,
    max_comparisons: MaxComparisons = None,
    seed: Annotated[int | None, typer.Option(help="Batch seed (SEED).")] = None,
    sets: Sets = None,
    batch_name: Annotated[
        str | None, typer.Option(help="A unique name to refer to the batch by.")
    ] = None,
    max_resampling_passes_small: Annotated[
        int | None,
        typer.Option(help="Resampling cap for small nets (MAX_RESAMPLING_PASSES_FOR_SMALL_NET)."),
    ] = None,
    max_resampling_passes_regular: Annotated[
        int | None,
        typer.Option(
            help="Resampling cap for regular batches (MAX_RESAMPLING_PASSES_FOR_REGULAR_BATCH)."
        ),
    ] = None,
    no_resampling: Annotated[
        bool, typer.Option("--no-resampling", help="No resampling passes (both caps 0).")
    ] = False,
    judge_model: JudgeModel = None,
    judge_temperature: JudgeTemperature = None,
    judge_max_tokens: JudgeMaxTokens = None,
    judge_base_url: JudgeBaseUrl = None,
    batch_api: BatchApi = False,
    no_cache: NoCache = False,
    db: Db = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    fmt: SummaryFormat = "table",
    verbose: Verbose = False,
    log_file: LogFile = None,
) -> None:
    """Run a batch to its stop: coverage, resampling, scoring, grades.

    Exit 0 when COMPLETED, 1 when FAILED, 2 on bad input, 130 when interrupted."""
    as_json = _summary_json(fmt, as_json)
    from cj_runner.judges.registry import build_judge
    from cj_runner.services.batches import create_batch, plan_summary, prepare, prepare_local

    request = _request(
        inventory,
        assignment_id,
        profile,
        judge,
        max_comparisons,
        sets,
        seed=seed,
        passes_small=max_resampling_passes_small,
        passes_regular=max_resampling_passes_regular,
        no_resampling=no_resampling,
        judge_model=judge_model,
        judge_temperature=judge_temperature,
        judge_max_tokens=judge_max_tokens,
        judge_base_url=judge_base_url,
        batch_name=batch_name,
        batch_api=batch_api,
    )

    async def body() -> tuple[RunResult, dict[str, Any]]:
        local = prepare_local(request)
        if local.judge_config.kind != "mock":
            # fail on a missing key before anything is written
            judge_obj = build_judge(local.judge_config)
            await judge_obj.aclose()
        store = await open_db(db)
        try:
            prepared = await prepare(store, request, local)
            for warning in prepared.inventory.warnings:
                err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
            batch_id = await create_batch(store, prepared, plan_summary(prepared))
            if not quiet and not as_json:
                err_console.print(f"batch {batch_id} created")
            with call_log(verbose, log_file) as log:
                return await _run_batch(
                    store, batch_id, quiet=quiet or as_json, use_cache=not no_cache, log=log
                )
        finally:
            await store.close()

    result, summary = run_async(body)
    _report_run(result, summary, as_json=as_json, quiet=quiet)


@app.command()
def resume(
    batch: Annotated[str, typer.Argument(help="Batch id or name.")],
    max_comparisons: Annotated[
        int | None,
        typer.Option(
            help="New call budget of the batch (raise or lower it; never below the calls "
            "already sent).",
            min=1,
        ),
    ] = None,
    no_cache: NoCache = False,
    db: Db = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    fmt: SummaryFormat = "table",
    verbose: Verbose = False,
    log_file: LogFile = None,
) -> None:
    """Continue a batch that did not finish (crash, Ctrl-C).

    Answered comparisons are kept; calls in flight are counted as sent and asked again
    if budget remains."""
    as_json = _summary_json(fmt, as_json)
    from cj_runner.storage import repository as repo

    async def body() -> tuple[RunResult, dict[str, Any]]:
        store = await open_db(db, must_exist=True)
        try:
            record = await repo.find_batch(store, batch)
            if record.status in ("COMPLETED", "FAILED"):
                raise UserError(
                    f"batch {record.id} already finished ({record.status}, "
                    f"{record.stop_reason}); nothing to resume"
                )
            if max_comparisons is not None:
                old, sent = await repo.set_total_budget(store, record.id, max_comparisons)
                if old != max_comparisons and not (quiet or as_json):
                    err_console.print(
                        f"budget {old} -> {max_comparisons} calls ({sent} already sent)"
                    )
            with call_log(verbose, log_file) as log:
                return await _run_batch(
                    store, record.id, quiet=quiet or as_json, use_cache=not no_cache, log=log
                )
        finally:
            await store.close()

    result, summary = run_async(body)
    _report_run(result, summary, as_json=as_json, quiet=quiet)


class _NoCalls:
    """The judge of a batch that is finalized: it has the stored prices (for the cost) and
    is never asked anything (so no API key is needed)."""

    def __init__(self, name: str, model: str, price_in: float, price_out: float) -> None:
        self.name, self.model, self.prompt_hash = name, model, ""
        self.price_input_per_mtok, self.price_output_per_mtok = price_in, price_out

    async def judge(self, request: Any) -> Any:
        raise RuntimeError("cj-run finalize sends no judge calls")

    async def aclose(self) -> None:
        return None


@app.command()
def finalize(
    batch: Annotated[str, typer.Argument(help="Batch id or name.")],
    db: Db = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """End a batch that did not finish (interrupted or crashed) with what it has: scores,
    intervals and grades from the comparisons so far; status COMPLETED, stop reason
    finalized_early. No judge call is made. Refused while another process runs it."""
    from cj_runner.services.batches import stored_judge_config
    from cj_runner.services.executor import BatchExecutor
    from cj_runner.services.summary import build_summary
    from cj_runner.storage import repository as repo

    async def body() -> tuple[RunResult, dict[str, Any]]:
        store = await open_db(db, must_exist=True)
        try:
            record = await repo.find_batch(store, batch)
            if record.status in ("COMPLETED", "FAILED"):
                raise UserError(
                    f"batch {record.id} already finished ({record.status}, "
                    f"{record.stop_reason}); nothing to finalize"
                )
            context = await _batch_context(store, record.id)
            config = stored_judge_config(record)
            judge = _NoCalls(
                config.name,
                config.model,
                config.price_input_per_mtok * config.price_factor,
                config.price_output_per_mtok * config.price_factor,
            )
            executor = BatchExecutor(
                store,
                context["batch"],
                context["nodes"],
                judge,
                context["settings"],
                assignment=context["assignment"],
                grade_scale=context["grade_scale"],
                use_cache=False,
            )
            result = await executor.finalize_early()
            return result, await build_summary(store, record.id)
        finally:
            await store.close()

    result, summary = run_async(body)
    _report_run(result, summary, as_json=as_json, quiet=quiet)


@app.command("list")
def list_batches(
    db: Db = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """List the batches in the database, newest first (ids are never cut short)."""
    from cj_runner.cli.common import to_csv
    from cj_runner.storage import repository as repo

    _check_format(fmt, ("table", "json", "csv"))
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


app.command()(enqueue)
app.command()(worker)
app.command("import")(import_judgments)


@app.command()
def harness(
    n: Annotated[int, typer.Option("--n", help="Nodes in the synthetic net.")] = 24,
    budget: Annotated[int | None, typer.Option(help="Call budget of each run.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first replicate.")] = 0,
    replicates: Annotated[int, typer.Option(help="Independent runs (seeds seed..).")] = 1,
    latent_sd: Annotated[float, typer.Option(help="SD of the true latent scores (logits).")] = 1.5,
    noise: Annotated[float, typer.Option(help="Logistic noise scale of the judge.")] = 1.0,
    position_bias: Annotated[
        float, typer.Option(help="Extra probability that position A wins.")
    ] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Probability that a comparison fails.")] = 0.0,
    profile: Profile = None,
    sets: Sets = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per run (--format json).")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Convergence harness: the workflow on synthetic nets, in memory.

    The workflow's own selection, continuation and scoring with a simulated judge; prints
    stop reason, waves, comparisons and Spearman with the truth."""
    _check_format(fmt, ("table", "json", "csv"))
    if as_json:
        fmt = "json"
    json_errors(fmt == "json")
    import numpy as np

    from cj_runner.config import load_settings
    from cj_runner.services.harness import SimulatedJudge, run_harness

    def body() -> list[dict[str, Any]]:
        flags = {"MAX_PAIRWISE_COMPARISONS": budget} if budget is not None else {}
        settings = load_settings(profile, tuple(sets or ()), flag_values=flags).settings
        if n < 2:
            raise UserError("--n must be at least 2")
        rows = []
        for k in range(replicates):
            rng = np.random.default_rng([seed + k, 7])
            truth = rng.standard_normal(n) * latent_sd
            judge_sim = SimulatedJudge(truth, noise, position_bias, error_rate)
            result = run_harness(judge_sim, settings, seed=seed + k)
            rows.append(
                {
                    "seed": seed + k,
                    "n": n,
                    "status": result.status,
                    "stop_reason": result.stop_reason,
                    "waves": result.waves,
                    "comparisons": result.comparisons,
                    "calls_sent": result.calls_sent,
                    "comparisons_per_essay": round(2 * result.comparisons / n, 3),
                    "spearman": round(result.spearman, 4),
                    "kendall": round(result.kendall, 4),
                    "ssr": result.history[-1].ssr if result.history else None,
                }
            )
        return rows

    async def wrapper() -> list[dict[str, Any]]:
        return body()

    rows = run_async(wrapper)
    if fmt == "json":
        emit_text(dump_json(rows if replicates > 1 else rows[0]), None)
        return
    if fmt == "csv":
        from cj_runner.cli.common import to_csv

        emit_text(to_csv(rows), None)
        return
    from rich.table import Table

    table = Table(title=f"Convergence harness (n={n})")
    for col in ("seed", "status", "stop", "waves", "comparisons", "calls", "cpe", "spearman"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["seed"]),
            r["status"],
            r["stop_reason"],
            str(r["waves"]),
            str(r["comparisons"]),
            str(r["calls_sent"]),
            f"{r['comparisons_per_essay']:.1f}",
            f"{r['spearman']:.3f}",
        )
    console.print(table)


@app.command("serve-mock")
def serve_mock(
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    profile: Profile = None,
    judge: Judge = None,
    inventory: Annotated[
        list[Path] | None,
        typer.Option(
            "--inventory",
            help="Inventories or anchor folders whose true_score column the served mock "
            "uses as latent quality (repeatable); without one it judges by text features.",
        ),
    ] = None,
) -> None:
    """Serve the mock judge over HTTP as an OpenAI-compatible endpoint
    (POST /v1/chat/completions) and an Anthropic-compatible one (POST /v1/messages)."""
    from cj_runner.config import load_settings
    from cj_runner.judges.server import MockJudgeServer
    from cj_runner.services.batches import JudgeOverrides, resolve_judge_config

    async def body() -> tuple[Any, dict[str, float]]:
        resolved = load_settings(profile, env={})
        config = resolve_judge_config(
            resolved, tuple(judge) if judge else None, JudgeOverrides(), env={}
        )
        if config.kind != "mock" or config.panel:
            what = "a panel" if config.panel else config.kind
            raise UserError(f"serve-mock serves a mock judge; {config.name!r} is {what}")
        return config, _latents(inventory or [], config.latent_column)

    config, latents = run_async(body)
    server = MockJudgeServer(config, host=host, port=port, latent_by_checksum=latents or None)
    server.start()
    console.print(
        f"mock judge {config.name!r} serving on {server.url} "
        f"(OpenAI: {server.url}/chat/completions, Anthropic: {server.root_url}/v1/messages); "
        "Ctrl-C stops it"
    )
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _latents(paths: list[Path], column: str) -> dict[str, float]:
    """Checksum -> latent from inventories (and anchor folders) with a latent column."""
    import csv

    from cj_runner.inputs import checksum, load_inventory, read_essay_text

    latents: dict[str, float] = {}
    for path in paths:
        items: list[tuple[str, Mapping[str, str]]]
        manifest = path / "anchors.csv"
        if manifest.is_file():
            with manifest.open(encoding="utf-8", newline="") as f:
                items = [
                    (checksum(read_essay_text(path / row["file"])), row)
                    for row in csv.DictReader(f)
                ]
        else:
            items = [(e.checksum, e.metadata) for e in load_inventory(path).essays]
        for key, metadata in items:
            with contextlib.suppress(KeyError, ValueError):
                latents[key] = float(metadata[column])
    return latents


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
