"""`cj-run`: plan, dry-run, execute, resume and list batches; the convergence harness;
the mock judge served over HTTP.

The typer app is assembled here; the commands live in ``run_plan``, ``run_execute`` and
``run_sim``, their shared options in ``run_options``."""

from __future__ import annotations

import typer

from cj_runner.cli.cohort import enqueue, worker
from cj_runner.cli.common import (
    VersionOption,
    json_errors,
)
from cj_runner.cli.imports import import_judgments
from cj_runner.cli.run_execute import execute, finalize, resume
from cj_runner.cli.run_plan import dry_run, list_batches, plan
from cj_runner.cli.run_sim import harness, serve_mock

# Heavy modules (numpy, scipy, SQLAlchemy, Alembic, httpx) are imported inside the
# commands (run_*.py), so `--help` and errors on bad arguments come back at once.


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


@app.callback()
def _main(
    version: VersionOption = False,
) -> None:
    """Run Comparative Judgement batches with an LLM (or mock) judge (see --help)."""
    json_errors(False)


# the commands, in the order `cj-run --help` lists them
app.command()(plan)
app.command("dry-run")(dry_run)
app.command()(execute)
app.command()(resume)
app.command()(finalize)
app.command("list")(list_batches)
app.command()(enqueue)
app.command()(worker)
app.command("import")(import_judgments)
app.command()(harness)
app.command("serve-mock")(serve_mock)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
