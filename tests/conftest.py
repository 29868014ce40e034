"""Shared fixtures: real SQLite files in a temp folder, the repository's example data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
        if name.startswith("CJ_") and name != "CJ_TEST_POSTGRES_URL":
            monkeypatch.delenv(name, raising=False)
