"""One DBOS executor process for the PostgreSQL workloads: it launches DBOS on the given system
database, registers the benchmark queue and runs what it dequeues until SIGTERM/SIGINT.

    python -m bench.dbos_worker_proc URL --concurrency 64 --poll-interval 0.05

Prints ``ready`` on stdout once launched.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from dbos import DBOS, DBOSConfig

from bench import dbos_runner  # noqa: F401  (registers the bench3 workflow and its step)
from bench.dbos_runner import QUEUE_NAME


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    ns = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    config: DBOSConfig = {
        "name": "loom-bench",
        "system_database_url": ns.url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(
        QUEUE_NAME, worker_concurrency=ns.concurrency, polling_interval_sec=ns.poll_interval
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
