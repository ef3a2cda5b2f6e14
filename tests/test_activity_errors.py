"""What a failed activity attempt records: its type and message as always, plus the traceback
(bounded, its tail kept) and the ``__cause__``/``__context__`` chain; any exception can be
described, however badly it prints. ``loom inspect --traceback`` shows it all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cli_workflows
import loom
from loom import EventType
from support import worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"


class ConfigError(Exception):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class _RaisingName(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no name")


class Nameless(Exception, metaclass=_RaisingName):
    pass


def _read_config() -> None:
    {}["region"]


@loom.activity(name="err_chained")
def err_chained() -> None:
    try:
        _read_config()
    except KeyError as exc:
        raise ConfigError("bad config") from exc


@loom.activity(name="err_deep_chain")
async def err_deep_chain() -> None:
    def level(n: int) -> None:
        try:
            if n == 0:
                raise ValueError("root")
            level(n - 1)
        finally:
            if n < 8:
                raise LookupError(f"level {n}")  # each one's __context__ is the one below

    level(8)


@loom.activity(name="err_unprintable")
async def err_unprintable() -> None:
    raise Unprintable()


@loom.activity(name="err_nameless")
async def err_nameless() -> None:
    raise Nameless("who am I")


@loom.activity(name="err_huge")
async def err_huge() -> None:
    raise ValueError("x" * 50_000 + " END")


@loom.activity(name="err_hidden_context")
async def err_hidden_context() -> None:
    try:
        raise KeyError("internal")
    except KeyError:
        raise ValueError("public") from None


ACTIVITIES = {
    "chained": err_chained,
    "deep": err_deep_chain,
    "unprintable": err_unprintable,
    "nameless": err_nameless,
    "huge": err_huge,
    "hidden": err_hidden_context,
}


@loom.workflow(name="err_Failing")
class ErrFailing(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="call")
    async def call(self, ctx: Ctx) -> None:
        await ctx.activity(ACTIVITIES[ctx.input["case"]])


async def failure_of(db: loom.Database, case: str) -> dict[str, Any]:
    handle = await db.start_workflow(ErrFailing, workflow_input={"case": case})
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError):
            await handle.result(timeout=10)
    [failed] = [e for e in await handle.events() if e.type is EventType.ACTIVITY_FAILED]
    error: dict[str, Any] = failed.payload["error"]
    return error


async def test_traceback_and_cause_are_recorded(db: loom.Database) -> None:
    error = await failure_of(db, "chained")
    assert error["type"] == "ConfigError"
    assert error["message"] == "bad config"
    assert error["cause"] == {"type": "KeyError", "message": "'region'", "cause": None}
    tb = error["traceback"]
    assert tb.endswith("ConfigError: bad config\n")
    assert "in _read_config" in tb and "KeyError: 'region'" in tb
    assert "direct cause of the following exception" in tb
    assert "in err_chained" in tb


async def test_cause_chain_is_cut_after_five_links(db: loom.Database) -> None:
    error = await failure_of(db, "deep")
    assert error["message"] == "level 7"
    messages = []
    link = error["cause"]
    while link is not None:
        messages.append(link["message"])
        link = link["cause"]
    assert messages == ["level 6", "level 5", "level 4", "level 3", "level 2"]


async def test_suppressed_context_is_not_a_cause(db: loom.Database) -> None:
    error = await failure_of(db, "hidden")
    assert (error["type"], error["message"], error["cause"]) == ("ValueError", "public", None)
    assert "internal" not in error["traceback"]


async def test_an_exception_that_cannot_print_itself_is_still_described(
    db: loom.Database,
) -> None:
    error = await failure_of(db, "unprintable")
    assert error["type"] == "Unprintable"
    assert error["message"] == "<unprintable Unprintable>"
    assert "in err_unprintable" in error["traceback"]


async def test_an_exception_type_without_a_usable_name_is_still_described(
    db: loom.Database,
) -> None:
    error = await failure_of(db, "nameless")
    assert error["type"] == "<unnamed exception type>"
    assert error["message"] == "who am I"
    assert "in err_nameless" in error["traceback"]


async def test_traceback_and_message_are_bounded_keeping_the_tail(db: loom.Database) -> None:
    error = await failure_of(db, "huge")
    assert len(error["traceback"]) <= 8200
    assert error["traceback"].rstrip().endswith("x END")
    assert error["traceback"].startswith("[")  # says that the beginning was dropped
    assert len(error["message"]) <= 8100
    assert error["message"].startswith("xxx")


# ------------------------------------------------------------------ loom inspect --traceback


def loom_cli(*args: str, url: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["LOOM_DATABASE_URL"] = url
    result = subprocess.run(
        [str(LOOM), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.processes
@pytest.mark.slow
async def test_inspect_traceback_shows_every_failed_attempt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loom.db'}"
    async with loom.Database(url) as db:
        await db.migrate_up()
        await db.start_workflow(
            cli_workflows.Flaky,
            workflow_input={"counter": str(tmp_path / "count"), "flag": str(tmp_path / "flag")},
            workflow_id="f1",
        )
        while await loom.run_once(db):
            pass

    shown = json.loads(loom_cli("inspect", "f1", "--traceback", "--json", url=url, cwd=tmp_path))
    [attempt] = shown["failed_attempts"]
    assert (attempt["activity"], attempt["attempt"], attempt["retried"]) == (
        "cli_require_flag",
        1,
        False,
    )
    assert attempt["error"]["type"] == "MissingFlagError"
    assert "in require_flag" in attempt["error"]["traceback"]
    assert shown["error"]["traceback"]  # the workflow's own error, as before

    text = loom_cli("inspect", "f1", "--traceback", url=url, cwd=tmp_path)
    assert "Failed activity attempts (1)" in text
    assert "activity 'cli_require_flag' attempt 1" in text
    assert "in require_flag" in text
    assert "ActivityFailedError" in text

    plain = loom_cli("inspect", "f1", url=url, cwd=tmp_path)
    assert "Failed activity attempts" not in plain
