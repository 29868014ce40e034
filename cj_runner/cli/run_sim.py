"""`cj-run harness` (the convergence harness on synthetic nets) and `cj-run serve-mock`
(the mock judge served over HTTP)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.common import (
    console,
    dump_json,
    emit_text,
    json_errors,
    run_async,
)
from cj_runner.cli.run_options import (
    Judge,
    Profile,
    Sets,
    check_format,
)
from cj_runner.errors import UserError

if TYPE_CHECKING:
    pass

# Heavy modules (numpy, scipy, SQLAlchemy, Alembic, httpx) are imported inside the
# commands, so `--help` and errors on bad arguments come back at once.


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
    check_format(fmt, ("table", "json", "csv"))
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
