"""`cj-run execute`, `cj-run resume` and `cj-run finalize`: run a batch to its stop (Ctrl-C
stops it resumably), and end one early without another call."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.common import (
    console,
    dump_json,
    emit_text,
    err_console,
    fail,
    json_errors,
    open_db,
    run_async,
)
from cj_runner.cli.run_options import (
    EXIT_FOR_STATUS,
    AsJson,
    AssignmentId,
    BatchApi,
    Db,
    Inventory,
    Judge,
    JudgeBaseUrl,
    JudgeMaxTokens,
    JudgeModel,
    JudgeTemperature,
    MaxComparisons,
    NoCache,
    Profile,
    Quiet,
    Sets,
    SummaryFormat,
    batch_request,
    summary_json,
)
from cj_runner.cli.run_support import LogFile, Verbose, call_log
from cj_runner.errors import CJError, UserError

if TYPE_CHECKING:
    from cj_runner.services.calllog import CallLog
    from cj_runner.services.executor import RunResult
    from cj_runner.storage import Store

# Heavy modules (numpy, scipy, SQLAlchemy, Alembic, httpx) are imported inside the
# commands, so `--help` and errors on bad arguments come back at once.


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _run_batch(
    store: Store, batch_id: str, *, quiet: bool, use_cache: bool, log: CallLog | None = None
) -> tuple[RunResult, dict[str, Any]]:
    from cj_runner.cli.render import ProgressView
    from cj_runner.judges.registry import open_judge
    from cj_runner.services.batches import batch_context, stored_executor, stored_judge_config
    from cj_runner.services.summary import build_summary

    context = await batch_context(store, batch_id)
    batch = context["batch"]
    judge_config = stored_judge_config(batch)
    async with open_judge(judge_config) as (judge, batch_api):
        stop = asyncio.Event()
        _install_signals(stop)
        show_progress = not quiet and err_console.is_terminal
        view = ProgressView(err_console) if show_progress else None
        executor = stored_executor(
            store,
            context,
            judge,
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
            # never a traceback and never a silent RUNNING batch: what was answered is
            # stored and the rest is asked again by a resume (calls in flight count as lost)
            detail = " ".join(str(exc).split())[:300]
            raise CJError(
                f"batch {batch.id} stopped: {type(exc).__name__}: {detail}; the answers so "
                f"far are stored. Resume with: cj-run resume {batch.id}"
            ) from None
    return result, await build_summary(store, batch.id)


def _report_run(result: RunResult, summary: dict[str, Any], *, as_json: bool, quiet: bool) -> None:
    from cj_runner.cli.render import summary_renderable

    if as_json:
        emit_text(dump_json(summary), None)
    elif not quiet:
        console.print(summary_renderable(summary))
    stopped = result.stopped_line(f"cj-run resume {result.batch_id}")
    if stopped is not None:
        json_errors(False)  # the summary above is the JSON output; the error goes to stderr
        raise fail(stopped)
    if result.interrupted:
        err_console.print(
            f"interrupted: answers so far are stored. Resume with: cj-run resume {result.batch_id}"
        )
    raise typer.Exit(EXIT_FOR_STATUS.get(result.status, 1))


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
    as_json = summary_json(fmt, as_json)
    from cj_runner.judges.registry import open_judge
    from cj_runner.services.batches import create_batch, plan_summary, prepare, prepare_local

    request = batch_request(
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
        # fail on a missing key (a panel's judges' too) or a judge that cannot run in
        # batch-API mode before anything is written
        async with open_judge(local.judge_config):
            pass
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
    as_json = summary_json(fmt, as_json)
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


def finalize(
    batch: Annotated[str, typer.Argument(help="Batch id or name.")],
    db: Db = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """End a batch that did not finish (interrupted or crashed) with what it has: scores,
    intervals and grades from the comparisons so far; status COMPLETED, stop reason
    finalized_early. No judge call is made. Refused while another process runs it."""
    from cj_runner.services.batches import batch_context, stored_executor, stored_judge_config
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
            context = await batch_context(store, record.id)
            config = stored_judge_config(record)
            judge = _NoCalls(
                config.name,
                config.model,
                config.price_input_per_mtok * config.price_factor,
                config.price_output_per_mtok * config.price_factor,
            )
            executor = stored_executor(store, context, judge, use_cache=False)
            result = await executor.finalize_early()
            return result, await build_summary(store, record.id)
        finally:
            await store.close()

    result, summary = run_async(body)
    _report_run(result, summary, as_json=as_json, quiet=quiet)
