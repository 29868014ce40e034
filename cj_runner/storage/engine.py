"""Opening the store: URL resolution, SQLite pragmas, automatic Alembic migrations.

Migrations run in one transaction, so a process killed in the middle of one leaves the
database at the revision it had. On SQLite that needs an explicit ``BEGIN IMMEDIATE``:
Python's sqlite3 module would otherwise run each ``CREATE TABLE`` in its own implicit
transaction. A database already at the wanted revision is only read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cj_runner.errors import ConfigError, StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_DB_FILE = "cj_runner.db"
_MIGRATION_LOCK_ID = 0x636A72756E  # PostgreSQL advisory lock held while migrating ("cjrun")


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
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration's revision id."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


async def _migrate(engine: AsyncEngine, revision: str) -> None:
    target = head_revision() if revision == "head" else revision
    async with engine.connect() as conn:
        if await conn.run_sync(_current_revision) == target:
            return
        # one transaction for the whole upgrade (see the module docstring); a second
        # process opening the same new database waits here, then finds it done
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
        await conn.run_sync(_upgrade, revision)
        await conn.commit()


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
    if path is not None and not path.parent.exists():
        raise StorageError(f"database folder does not exist: {path.parent}")
    engine = create_engine_for(url)
    try:
        if migrate:
            await _migrate(engine, revision)
    except SQLAlchemyError as exc:
        await engine.dispose()
        raise StorageError(f"cannot open database {make_url(url)!r}: {exc}") from exc
    except BaseException:
        await engine.dispose()
        raise
    return Store(engine, url)
