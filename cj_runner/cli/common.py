"""Shared pieces of the command-line apps: error handling, options, JSON/CSV output."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from cj_runner import __version__
from cj_runner.errors import CJError, StorageError, UserError

if TYPE_CHECKING:
    from cj_runner.storage import Store

T = TypeVar("T")


def _plain_help() -> None:
    """Help without type tags on flags and without braces around arguments.

    typer 0.29 renders every option with its Python type (``--quiet <bool>``, also
    ``--help <bool>``) and a required argument as ``{batch}``. A flag takes no value, so
    it gets no tag; arguments read ``BATCH`` as in every other command-line tool. Older
    typers do not have these hooks and render cleanly already.
    """
    core: Any = getattr(typer, "core", None)
    option = getattr(core, "TyperOption", None)
    argument = getattr(core, "TyperArgument", None)
    if option is not None and hasattr(option, "display_type_rich"):
        original = option.display_type_rich

        def display_type_rich(self: Any, ctx: Any) -> str | None:
            if getattr(self, "is_flag", False) or getattr(self, "count", False):
                return None
            result: str | None = original(self, ctx)
            return result

        option.display_type_rich = display_type_rich
    if argument is not None and hasattr(argument, "_usage_display_name"):

        def usage_name(self: Any) -> str:
            name = str(self.metavar or self.name or "").upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        argument._usage_display_name = usage_name
    if argument is not None and hasattr(argument, "display_name_raw"):
        argument.display_name_raw = property(lambda self: str(self.metavar or self.name).upper())


_plain_help()

console = Console(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)

DB_HELP = (
    "Database: a SQLite file path or a SQLAlchemy URL (postgresql+asyncpg://...). "
    "Env CJ_DB; default cj_runner.db in the working folder."
)


_json_errors = False


def json_errors(enabled: bool) -> None:
    """With JSON output asked for, errors are also printed as JSON on stdout.

    Every app's callback resets it, so one invocation never inherits another's choice.
    """
    global _json_errors
    _json_errors = enabled


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise.

    With JSON output (:func:`json_errors`), stdout gets ``{"error": ..., "exit_code": ...}``
    too, so a script that parses stdout sees the error instead of nothing.
    """
    text = " ".join(message.split())
    # plain text: one line, never wrapped, and no markup parsing of user data
    typer.echo(f"error: {text}", err=True)
    if _json_errors:
        typer.echo(json.dumps({"error": text, "exit_code": code}, ensure_ascii=False))
    return typer.Exit(code)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn expected errors into one line on stderr and an exit code."""
    try:
        return asyncio.run(factory())
    except UserError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except StorageError as exc:
        raise fail(str(exc), 2) from None
    except CJError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except (OSError, ValueError, ArithmeticError) as exc:  # a last resort: never a traceback
        raise fail(f"{type(exc).__name__}: {exc}", 1) from None


async def open_db(db: str | None, *, must_exist: bool = False) -> Store:
    """Open the store named by ``--db`` / ``CJ_DB``; migrations run automatically."""
    from cj_runner.storage import open_store, resolve_db_url
    from cj_runner.storage.engine import sqlite_path

    url = resolve_db_url(db)
    path = sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise UserError(f"--db: no database at {path} (run a batch or register anchors first)")
    return await open_store(url)


async def with_db(db: str | None, body: Callable[[Store], Awaitable[T]], **kw: Any) -> T:
    """Open the store, run ``body`` with it, close it."""
    store = await open_db(db, **kw)
    try:
        return await body(store)
    finally:
        await store.close()


def version_callback(value: bool) -> None:
    """``--version``."""
    if value:
        console.print(f"cj-runner {__version__}")
        raise typer.Exit(0)


VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version."),
]


def dump_json(obj: Any) -> str:
    """Stable, readable JSON (sorted keys are NOT used: key order is part of the contract)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text with a header (also when there are no rows and ``columns`` is
    given); nested values JSON-encoded."""
    if not rows and not columns:
        return ""
    cols = list(columns) if columns else list(rows[0].keys())
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: csv_cell(json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v)
                for k, v in row.items()
            }
        )
    return out.getvalue()


#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet cannot run: a *text* starting with ``= + - @``, tab or
    CR gets a leading ``'`` (numbers, negative ones included, stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def emit_text(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` or stdout."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    else:
        write_output(output, text)


def write_output(output: Path, text: str, option: str = "--output") -> None:
    """Write ``text`` to the file ``output``; one line and exit 2 when it cannot be written
    (a missing folder, a folder, a full disk)."""
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise fail(f"{option} {output}: cannot write the file: {reason}") from None
    err_console.print(f"wrote {output}")
