"""Opening the store: URL resolution, SQLite pragmas, automatic Alembic migrations.

Migrations run in one transaction, so a process killed in the middle of one leaves the
database at the revision it had. On SQLite that needs an explicit ``BEGIN IMMEDIATE``:
Python's sqlite3 module would otherwise run each ``CREATE TABLE`` in its own implicit
transaction. A database already at the wanted revision is only read.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cj_runner.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_DB_FILE = "cj_runner.db"
_MIGRATION_LOCK_ID = 0x636A72756E  # PostgreSQL advisory lock held while migrating ("cjrun")
_BUSY_TIMEOUT_MS = 10_000  # SQLite: how long a write waits for another writer
_MIGRATION_WAIT_MS = 300_000  # SQLite: how long an open waits for another's migration


def resolve_db_url(db: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Turn ``--db`` (a file path or a SQLAlchemy URL), else ``CJ_DB``, into an async URL.

    The default is ``cj_runner.db`` in the working folder. ``sqlite://`` and
    ``postgresql://`` URLs get their async drivers (aiosqlite, asyncpg).
    """
    env = os.environ if env is None else env
    value = (db or env.get("CJ_DB") or DEFAULT_DB_FILE).strip()
    if "://" not in value:
        return f"sqlite+aiosqlite:///{Path(value).expanduser().resolve()}"
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ConfigError(f"--db: not a database URL or file path: {value!r}") from exc
    driver = url.drivername
    if driver == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    if url.drivername == "postgresql+asyncpg" and "sslmode" in url.query:
        # libpq's name; asyncpg calls the same setting ``ssl`` (same values)
        query = dict(url.query)
        query["ssl"] = query.pop("sslmode")
        url = url.set(query=query)
    return url.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or ``None`` for other databases and ``:memory:``."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # the busy timeout first: switching a new file to WAL waits for a writer too
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# Alembic is imported where it is used: a database already at the newest revision is
# opened without it (every report process would otherwise pay for importing it)


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), revision)


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}


def _tables(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


async def _check_ours(conn: Any, current: str | None, where: str) -> None:
    """Refuse a database this build must not write into: one of a newer schema, or a
    SQLite file that holds tables but no cj-runner schema at all (a PostgreSQL database
    may be shared with other applications' tables)."""
    if current is not None:
        if current not in _known_revisions():
            raise StorageError(
                f"{where} was written by a newer cj-runner (schema revision {current}); "
                f"this build knows revisions up to {head_revision()}: upgrade cj-runner"
            )
        return
    if conn.dialect.name != "sqlite":
        return
    tables = [t for t in await conn.run_sync(_tables) if t != "alembic_version"]
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageError(
            f"{where} is not a cj-runner database (it holds other tables: {shown}); "
            "refused, nothing was written: give --db a new file or a cj-runner database"
        )


_REVISION_LINE = re.compile(
    r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(?:None|[\"']([^\"'\n]+)[\"'])\s*$",
    re.MULTILINE,
)


@functools.cache
def declared_head() -> str | None:
    """The newest migration as its file declares it, read without importing Alembic.

    ``None`` (ask Alembic) unless every migration file has one plain ``revision = "..."``
    and ``down_revision = "..."`` (or ``None``) line and they form exactly one head.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        if path.name == "__init__.py":
            continue
        found: dict[str, list[str | None]] = {}
        for match in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group(1), []).append(match.group(2))
        rev, down = found.get("revision", []), found.get("down_revision", [])
        if len(rev) != 1 or rev[0] is None or len(down) != 1:
            return None
        revisions.add(rev[0])
        if down[0] is not None:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def _stored_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, read with one query (``None``: none, several, or
    no ``alembic_version`` table: the caller asks Alembic)."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except SQLAlchemyError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


async def _migrate(engine: AsyncEngine, revision: str, where: str) -> None:
    if revision == "head":
        # the common case, a database at the newest revision: no Alembic needed
        declared = declared_head()
        if declared is not None and await _stored_revision(engine) == declared:
            return
    target = head_revision() if revision == "head" else revision
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_revision)
        if current == target:
            return
        # one transaction for the whole upgrade (see the module docstring); a second
        # process opening the same new database waits here, then finds it done
        if engine.dialect.name == "sqlite":
            # waiting for another process's migration is waiting, not a failure: a loaded
            # machine can take longer than the ordinary busy timeout to migrate a new file
            await conn.exec_driver_sql(f"PRAGMA busy_timeout={_MIGRATION_WAIT_MS}")
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
        # read again under the lock: another process may have migrated since the first
        # read, and the revision and the tables must come from the same snapshot
        current = await conn.run_sync(_current_revision)
        await _check_ours(conn, current, where)
        if current != target:
            await conn.run_sync(_upgrade, revision)
        await conn.commit()
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")


class Store:
    """An open database: the async engine plus the dialect name."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def revision(self) -> str | None:
        """The Alembic revision the database is at."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def create_engine_for(url: str) -> AsyncEngine:
    """An async engine with SQLite pragmas (WAL, foreign keys) where it applies."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    try:
        engine = create_async_engine(url, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"--db: cannot use {make_url(url).drivername}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    return engine


async def open_store(url: str, *, revision: str = "head", migrate: bool = True) -> Store:
    """Open the database at ``url`` and bring its schema to ``revision`` (Alembic).

    A database written by an older version is migrated forward automatically.
    """
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path)
        await asyncio.to_thread(_ensure_wal, path)
    where = str(path) if path is not None else repr(make_url(url))
    engine = create_engine_for(url)
    try:
        if migrate:
            await _migrate(engine, revision, where)
    except SQLAlchemyError as exc:
        await engine.dispose()
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise StorageError(f"cannot open database {where}: {detail}") from exc
    except (OSError, ValueError, TypeError, TimeoutError) as exc:  # refused, unknown host,
        await engine.dispose()  # a bad sslmode ... (raised by the driver as they are)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise StorageError(f"cannot connect to database {where}: {detail}") from exc
    except BaseException:
        await engine.dispose()
        raise
    return Store(engine, url)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _ensure_wal(path: Path) -> None:
    """Switch a SQLite file to WAL once, before the engine's connections open it.

    Two connections switching the same new (rollback-journal) file at once deadlock inside
    SQLite: each holds a shared lock and wants the exclusive one, so SQLite answers one of
    them "database is locked" at once, without waiting out the busy timeout. Here the
    switch is retried until the migration wait ends; once the file is in WAL mode (it
    stays so), the connect hook's ``journal_mode=WAL`` only reads. Any other error is left
    to the normal open, which reports it.
    """
    deadline = time.monotonic() + _MIGRATION_WAIT_MS / 1000
    delay = 0.005
    while True:
        try:
            conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error:
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                return
        except sqlite3.Error:
            return
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            return
        time.sleep(delay)  # in a worker thread: the event loop goes on
        delay = min(delay * 2, 0.2)


def _plain_tables(path: Path) -> list[str]:
    """The tables of a SQLite file, read without changing it (no WAL switch, no pragmas);
    empty when it cannot be read that way (the normal open then reports the problem)."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return sorted(str(r[0]) for r in rows)


def _check_sqlite_file(path: Path) -> None:
    """Refuse, before anything is written, a SQLite path cj-runner cannot or must not use."""
    if not path.parent.exists():
        raise StorageError(f"database folder does not exist: {path.parent}")
    if path.is_dir():
        raise StorageError(f"--db: {path} is a folder, not a database file")
    if not path.exists():
        if not os.access(path.parent, os.W_OK):
            raise StorageError(f"--db: cannot create {path}: the folder is read-only")
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"--db: cannot read {path}: {exc.strerror or exc}") from None
    if header and header != _SQLITE_HEADER:
        raise StorageError(f"--db: {path} is not a SQLite database; refused, nothing was written")
    if header:
        tables = _plain_tables(path)
        if tables and "alembic_version" not in tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StorageError(
                f"{path} is not a cj-runner database (it holds other tables: {shown}); "
                "refused, nothing was written: give --db a new file or a cj-runner database"
            )
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StorageError(
            f"--db: {path} is read-only (cj-runner writes to its database and, with SQLite, "
            "next to it); copy it somewhere writable"
        )
