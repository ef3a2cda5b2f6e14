"""A throwaway PostgreSQL cluster of a test's own: initdb into a temporary directory, pg_ctl on
a free port (as the ``postgres`` OS user when running as root), an empty ``loom`` database.

Tests that restart PostgreSQL use one of these, never the machine's shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]


class ClusterUnavailable(Exception):
    """This machine cannot run a throwaway cluster (no server binaries, or no way to run them)."""


@dataclass
class Cluster:
    """A PostgreSQL cluster of its own, in a temporary directory, listening on ``port``."""

    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/loom"

    def run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"{log.read_text() if log.exists() else ''}"
            )

    def pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-w", "-t", "30", "-o", options, *args,
        )  # fmt: skip


def find_bindir() -> Path | None:
    def version(path: str) -> float:
        with contextlib.suppress(ValueError):
            return float(Path(path).parent.name)
        return 0.0

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(bindir)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def throwaway_cluster(prefix: str = "loom-pg-") -> Iterator[Cluster]:
    """A running cluster with an empty ``loom`` database; stopped and deleted on exit."""
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix=prefix))  # reachable by the postgres user
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
