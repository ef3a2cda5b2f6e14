"""Shared fixtures: a fresh database per test on every backend, markers, and cleanup.

Helpers that tests import (``worker``, ``of_type``, ``eventually``, the PostgreSQL helpers) live
in ``tests/support/``. Markers (registered in pyproject.toml): ``slow``, ``processes`` and
``browser`` are set in the test files; ``postgres`` is added here to every test that runs on
PostgreSQL, so ``pytest -m "not postgres"`` needs no server and ``pytest -m "not slow"`` is the
quick inner loop.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import loom
from support import pg
from support.pg import pg_db_url  # noqa: F401 (a fixture any test may ask for)

pytest_plugins = ["pytester"]  # tests/test_support.py runs pytest on a test of its own


def _runs_on_postgres(item: pytest.Item) -> bool:
    """A test parametrised with a "postgres" backend (or "postgres+..." variant of it), or one
    asking for a PostgreSQL database."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(
        isinstance(v, str) and (v == "postgres" or v.startswith("postgres+"))
        for v in callspec.params.values()
    ):
        return True
    return "pg_db_url" in getattr(item, "fixturenames", ())


def pytest_configure(config: pytest.Config) -> None:
    # Loom's pytest plugin (the loom_env fixture) comes with an installed Loom through its
    # entry point; a source tree run with an install that predates it registers it here.
    if not config.pluginmanager.has_plugin("loom"):
        config.pluginmanager.import_plugin("loom.testing.pytest_plugin")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _runs_on_postgres(item):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases this test created, however it created them, when it ends
    (after its other fixtures have closed their connections)."""
    before = pg.created()
    yield
    pg.drop_created_since(before)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database: every engine test runs on every backend. (Under the
    ``db`` fixture a PostgreSQL database comes with the schema already: ``db`` migrates anyway.)"""
    if request.param == "postgres":
        return pg.ready_database(migrated="db" in request.fixturenames)
    return f"sqlite:///{tmp_path / 'loom.db'}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[loom.Database]:
    async with loom.Database(db_url) as database:
        await database.migrate_up()
        yield database


@pytest.fixture
def wid(request: pytest.FixtureRequest) -> str:
    """A workflow id unique to this test (its node name), for tests without a database."""
    return f"replay-{request.node.name}"


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with no LOOM_DATABASE_URL: the default loom.db lands here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOM_DATABASE_URL", raising=False)
    return tmp_path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small file systems of their own (``tmpfs("1m")``), unmounted afterwards; skips
    where this process may not mount one."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pg.unavailable(f"tmpfs of its own (mount: {done.stderr.decode().strip()})")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def mount_point(tmpfs: Callable[[str], Path]) -> Path:
    """A tiny file system of its own (256 KiB)."""
    return tmpfs("256k")
