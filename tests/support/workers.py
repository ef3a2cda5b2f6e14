"""Running workflows in tests: one in-process worker configuration, worker processes to kill
(``tests/crashload.py``, ``tests/fencing_workload.py``), and event filters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import loom
from loom import EventType

TESTS_DIR = Path(__file__).resolve().parent.parent
SRC_DIR = TESTS_DIR.parent / "src"


def worker(db: loom.Database, **options: Any) -> loom.Worker:
    """An in-process worker tuned for tests: polls often (a test waits for it) and runs a few
    workflows at once; any option of :class:`loom.Worker` can be overridden."""
    options.setdefault("concurrency", 4)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("lease_seconds", 10)
    return loom.Worker(db, **options)


def spawn_loom_worker(db_url: str, log: Path, cwd: Path, *options: str) -> subprocess.Popen[bytes]:
    """A `loom worker -d DB_URL OPTIONS` process (the tests' modules importable), its stderr
    appended to ``log``."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    loom_command = Path(sys.executable).parent / "loom"
    with log.open("a") as out:
        return subprocess.Popen(
            [str(loom_command), "worker", "-d", db_url, *options],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def of_type(events: list[loom.Event], kind: EventType) -> list[loom.Event]:
    """The events of one kind, in history order."""
    return [e for e in events if e.type is kind]


async def spawn_worker_script(
    script: Path, url: str, stderr_path: Path, *options: str
) -> asyncio.subprocess.Process:
    """Start ``script worker URL OPTIONS`` (tests/crashload.py, tests/fencing_workload.py) as a
    worker process, importable from a fresh clone, and wait until it prints ``ready``; its
    stderr is appended to ``stderr_path``. Raises RuntimeError, with that stderr, if it does
    not start."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC_DIR), str(TESTS_DIR), env.get("PYTHONPATH")) if p
    )
    with stderr_path.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            "worker",
            url,
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"worker process did not start:\n{read_text(stderr_path)}")
    return proc


async def spawn_crashload_worker(
    url: str,
    stderr_path: Path,
    *,
    concurrency: int,
    lease_seconds: float,
    retention: float | None = None,
) -> asyncio.subprocess.Process:
    """A ready worker process running the workflows of tests/crashload.py (sweeping finished
    workflows older than ``retention`` seconds, if given)."""
    extra = () if retention is None else ("--retention", str(retention))
    return await spawn_worker_script(
        TESTS_DIR / "crashload.py",
        url,
        stderr_path,
        "--concurrency",
        str(concurrency),
        "--lease-seconds",
        str(lease_seconds),
        "--poll-interval",
        "0.05",
        *extra,
    )


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
