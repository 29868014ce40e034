"""`cj-run`'s shared options (typer annotations) and the helpers the commands share:
the output format check and the batch request built from the flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cj_runner.cli.common import (
    DB_HELP,
    fail,
    json_errors,
)

if TYPE_CHECKING:
    from cj_runner.services.batches import RunRequest

# Heavy modules (numpy, scipy, SQLAlchemy, Alembic, httpx) are imported inside the
# commands, so `--help` and errors on bad arguments come back at once.


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


def summary_json(fmt: str, as_json: bool) -> bool:
    """``--format table|json`` with ``--json`` as its alias; JSON errors with JSON output."""
    check_format(fmt, ("table", "json"))
    wanted = as_json or fmt == "json"
    json_errors(wanted)
    return wanted


def check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise fail(f"--format must be one of {', '.join(allowed)}")


def batch_request(
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
