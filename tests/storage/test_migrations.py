"""The store opens old databases, migrates them, and keeps SQLite in WAL with FKs on."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage.engine import declared_head, head_revision
from cj_runner.storage.schema import Base


def _columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_first_migration_then_current_code_gives_current_schema(db_path: Path) -> None:
    url = resolve_db_url(str(db_path))
    store = await open_store(url, revision="0001")
    assert await store.revision() == "0001"
    await store.close()
    assert "judgment_cache" not in _tables(db_path)
    assert "prompt_hash" not in _columns(db_path, "comparisons")

    store = await open_store(url)  # what every command does
    assert await store.revision() == head_revision()
    await store.close()
    for table in Base.metadata.sorted_tables:
        assert table.name in _tables(db_path)
        assert {c.name for c in table.columns} == _columns(db_path, table.name), table.name


async def test_a_0002_database_opens_and_its_old_cache_is_never_reused(db_path: Path) -> None:
    url = resolve_db_url(str(db_path))
    store = await open_store(url, revision="0002")
    await store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO judgment_cache (model, prompt_hash, checksum_a, checksum_b, "
            "repeat_index, winner, confidence, justification, tokens_in, tokens_out, "
            "created_at) VALUES ('m', 'h', 'a', 'b', 0, 'A', 3, 'old', 1, 1, "
            "'2025-01-01 00:00:00')"
        )
    store = await open_store(url)
    assert await store.revision() == head_revision()
    await store.close()
    assert "request_key" in _columns(db_path, "judgment_cache")
    assert "cache_source" in _columns(db_path, "comparisons")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM judgment_cache").fetchone() == (0,)


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(db_path: Path) -> None:
    store = await open_store(resolve_db_url(str(db_path)))
    async with store.engine.connect() as conn:
        fk = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
    await store.close()
    assert fk == 1
    assert mode == "wal"


def test_db_url_resolution(tmp_path: Path) -> None:
    file_url = resolve_db_url(str(tmp_path / "a.db"))
    assert file_url.startswith("sqlite+aiosqlite:///") and file_url.endswith("a.db")
    assert resolve_db_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    pg = resolve_db_url("postgresql://u:p@127.0.0.1:5432/cj")
    assert pg == "postgresql+asyncpg://u:p@127.0.0.1:5432/cj"
    assert resolve_db_url(None, env={"CJ_DB": str(tmp_path / "env.db")}).endswith("env.db")
    assert resolve_db_url(None, env={}).endswith("cj_runner.db")


def test_the_declared_head_is_alembics_head() -> None:
    """Opening a database at the newest revision skips Alembic: the head read from the
    migration files' revision lines must be the one Alembic computes."""
    assert declared_head() == head_revision()


async def test_a_database_at_head_opens_without_importing_alembic(db_path: Path) -> None:
    url = resolve_db_url(str(db_path))
    store = await open_store(url)  # creates and migrates (Alembic)
    await store.close()
    code = (
        "import asyncio, sys\n"
        "from cj_runner.storage import open_store\n"
        "async def main():\n"
        f"    store = await open_store({url!r})\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # (an older database still goes through Alembic: the tests above)
    assert done.stdout.strip() == "False"
