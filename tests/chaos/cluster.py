"""A throwaway PostgreSQL cluster for the chaos run, restarted at will.

It reuses tests/test_pg_restart.py's :class:`Cluster` (initdb into a temporary directory,
pg_ctl on a free port, as the ``postgres`` OS user when running as root): the machine's shared
server is never restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from test_pg_restart import Cluster, find_bindir, free_port


class ClusterUnavailable(Exception):
    """This machine cannot run a throwaway cluster (no server binaries, or no way to run them)."""


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A running cluster with an empty ``loom`` database; stopped and deleted on exit."""
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="loom-chaos-pg-"))
    try:
        if os.geteuid() == 0:  # initdb refuses to run as root
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ClusterUnavailable("running as root and no runuser to become postgres")
            try:
                shutil.chown(root, user="postgres")
            except (LookupError, PermissionError) as exc:
                raise ClusterUnavailable(f"cannot hand {root} to the postgres user: {exc}") from exc
            as_user = [runuser, "-u", "postgres", "--"]
        cluster = Cluster(bindir, root, free_port(), as_user)
        try:
            cluster.run(
                "initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync",
            )  # fmt: skip
            cluster.pg_ctl("start")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterUnavailable(f"cannot start a throwaway cluster: {exc}") from exc
        try:
            asyncio.run(_create_database(cluster.port))
            yield cluster
        finally:
            with contextlib.suppress(Exception):
                cluster.pg_ctl("stop", "-m", "immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _create_database(port: int) -> None:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=10)
    try:
        await conn.execute("CREATE DATABASE loom")
    finally:
        await conn.close()
