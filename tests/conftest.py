"""Shared fixtures: a fresh SQLite database per test, and a helper to run workers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import loom


@pytest.fixture
def db_url(tmp_path: Path) -> str:
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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
