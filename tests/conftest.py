"""Shared fixtures: a fresh SQLite database per test, and a helper to run workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import loom
import pg


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database: every engine test runs on every backend."""
    if request.param == "postgres":
        return pg.pg_url(tmp_path)
    return f"sqlite:///{tmp_path / 'loom.db'}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[loom.Database]:
    async with loom.Database(db_url) as database:
        await database.migrate_up()
        yield database


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with no LOOM_DATABASE_URL: the default loom.db lands here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOM_DATABASE_URL", raising=False)
    return tmp_path
