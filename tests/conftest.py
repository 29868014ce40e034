"""Shared fixtures: real SQLite files in a temp folder, the repository's example data, and
``db_url``: the same test on SQLite and (when a server is given) PostgreSQL."""

from __future__ import annotations

import cj_runner  # noqa: F401  (first: one BLAS thread, as the CLI; see cj_runner/__init__.py)

# isort: split

import asyncio
import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis times every example (200 ms by default) and fails a test whose examples or
# data generation are slow: on a loaded machine that is the machine's speed, not the
# code's. Property tests here check results only.
settings.register_profile("cj-runner", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cj-runner")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh database file path (the file is created by the code under test)."""
    return tmp_path / "cj.db"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's CJ_* settings or API keys."""
    for name in list(os.environ):
        if name.startswith("CJ_") and not name.startswith("CJ_TEST_"):
            monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- leaks stay with their test

_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _leaks_stay_with_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that fails half-way can leave a client's connections open where only the
    garbage collector finds them; the ResourceWarnings (errors here) would then fail
    whichever later test happens to trigger a collection. Collect at the failed test's
    teardown, so they are reported with it."""
    yield
    if request.node.stash.get(_CALL_FAILED, False):
        gc.collect()


# ---------------------------------------------------------------- databases: SQLite and PostgreSQL

POSTGRES_URL_ENV = "CJ_TEST_POSTGRES_URL"


def postgres_base_url() -> str | None:
    """The server given by ``CJ_TEST_POSTGRES_URL`` (``.ci/services.d/postgres.sh``)."""
    return os.environ.get(POSTGRES_URL_ENV) or None


async def _postgres_admin(base_url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for ``--db``, once per backend: a SQLite file path, and
    (only when ``CJ_TEST_POSTGRES_URL`` is set, else skipped) a new PostgreSQL database
    on that server, dropped after the test."""
    if request.param == "sqlite":
        yield str(tmp_path / "cj.db")
        return
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set (.ci/services.d/postgres.sh start)")
    from sqlalchemy.engine import make_url

    name = f"cj_test_{uuid.uuid4().hex[:16]}"
    asyncio.run(_postgres_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_postgres_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
