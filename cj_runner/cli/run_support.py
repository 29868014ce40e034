"""Helpers of `cj-run` for checking a judge before spending and for the per-call log."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cj_runner.cli.common import err_console, fail

if TYPE_CHECKING:
    from cj_runner.judges.config import JudgeConfig
    from cj_runner.services.calllog import CallLog

Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Log every judge call on stderr (time, slot, status, error)."
    ),
]
LogFile = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        help="Append the per-call log to this file (time, slot, attempt, status, error; "
        "never a key).",
    ),
]


async def check_judge_lines(config: JudgeConfig) -> list[str]:
    """Check the judge's key variable and server (a free request); the lines to show."""
    from cj_runner.judges.preflight import check_judge

    return list((await check_judge(config)).lines)


def print_check(lines: list[str]) -> None:
    for line in lines:
        err_console.print(f"judge check: {line}", markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def call_log(verbose: bool, log_file: Path | None) -> Iterator[CallLog | None]:
    """The per-call log for ``--verbose`` (stderr) and ``--log-file`` (appended)."""
    if not verbose and log_file is None:
        yield None
        return
    from cj_runner.services.calllog import CallLog

    handle = None
    if log_file is not None:
        try:
            handle = log_file.open("a", encoding="utf-8")
        except OSError as exc:
            raise fail(f"--log-file: cannot write {log_file}: {exc.strerror or exc}") from None
    try:
        yield CallLog(*(s for s in (sys.stderr if verbose else None, handle) if s is not None))
    finally:
        if handle is not None:
            handle.close()
