"""``loom queue set`` changes the limits it is given and keeps the others, even when another
process changes those meanwhile: the database keeps them, the command does not write back what
it read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import loom
from loom.cli.app import app
from loom.queues import Rate
from test_cli import assert_one_line_error, cli_env, loom_cli, ok


def _limits(url: str) -> list[loom.QueueLimits]:
    async def read() -> list[loom.QueueLimits]:
        async with loom.Database(url) as db:
            return await db.queue_limits()

    return asyncio.run(read())


def test_a_limit_set_meanwhile_by_another_process_is_kept(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def prepare() -> None:
        async with loom.Database(db_url) as db:
            await db.migrate_up()
            await db.set_queue("emails", concurrency=2)

    asyncio.run(prepare())
    original = loom.Database.set_queue

    async def after_another_change(self: loom.Database, name: str, **limits: Any) -> Any:
        # Another process sets the rate between this command's start and its write.
        async with loom.Database(db_url) as other:
            await other.store.set_queue(loom.QueueLimits("emails", 2, Rate(10, 1.0)), time.time())
        return await original(self, name, **limits)

    monkeypatch.setattr(loom.Database, "set_queue", after_another_change)
    done = CliRunner().invoke(
        app, ["queue", "set", "emails", "--concurrency", "5", "--database", db_url]
    )
    assert done.exit_code == 0, done.output
    assert "concurrency 5, rate 10/s" in done.output
    assert _limits(db_url) == [loom.QueueLimits("emails", 5, Rate(10, 1.0))]


@pytest.mark.processes
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1_000", "--concurrency '1_000': give a whole number"),
        (" 7 ", "--concurrency ' 7 ': give a whole number"),
        ("\u0663", "give a whole number"),  # ARABIC-INDIC DIGIT THREE: int() takes it
        ("1" * 30, "give a whole number"),
        ("2147483648", "<= 2147483647"),
        ("99999999999999999999", "<= 2147483647"),
    ],
)
def test_a_concurrency_is_plain_digits_within_range(
    tmp_path: Path, value: str, fragment: str
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    env = cli_env(url)
    ok(loom_cli("init", env=env, cwd=tmp_path))
    done = loom_cli("queue", "set", "emails", "--concurrency", value, env=env, cwd=tmp_path)
    assert_one_line_error(done, fragment)
    assert _limits(url) == []
