"""The worker's status line: counters from :class:`loom.WorkerStats` and a recent throughput."""

from __future__ import annotations

import collections
import time

from rich.text import Text

import loom

WINDOW_SECONDS = 10.0


class StatusLine:
    """Renders ``completed · failed · running · ... · throughput`` for one worker."""

    def __init__(self, worker: loom.Worker) -> None:
        self.worker = worker
        self.stopping = False
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def throughput(self) -> float:
        """Workflows completed per second over the last few seconds."""
        now, done = time.monotonic(), self.worker.stats.completed
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done = self._samples[0]
        if now - first_time >= 1.0:
            return (done - first_done) / (now - first_time)
        return self.average()

    def average(self) -> float:
        """Workflows completed per second since the worker started."""
        elapsed = time.time() - self.worker.stats.started_at
        return self.worker.stats.completed / elapsed if elapsed > 0 else 0.0

    def snapshot(self) -> tuple[int, ...]:
        """The counters alone, to tell whether anything changed since the last report."""
        stats = self.worker.stats
        return (stats.completed, stats.failed, self.worker.in_flight, stats.parked)

    def counters(self) -> list[tuple[str, str]]:
        stats = self.worker.stats
        return [
            ("completed", str(stats.completed)),
            ("failed", str(stats.failed)),
            ("running", str(self.worker.in_flight)),
            ("parked", str(stats.parked)),
            ("activities", str(stats.activities)),
            ("throughput", rate(self.throughput())),
            ("up", _uptime(time.time() - stats.started_at)),
        ]

    def plain(self) -> str:
        return "  ".join(f"{name} {value}" for name, value in self.counters())

    def summary(self) -> str:
        """The final report of a worker that stopped."""
        stats = self.worker.stats
        return (
            f"completed {stats.completed}, failed {stats.failed}, canceled {stats.canceled}, "
            f"parked {stats.parked}, activities {stats.activities} in "
            f"{_uptime(time.time() - stats.started_at)} ({rate(self.average())} on average)"
        )

    def rich(self) -> Text:
        """The live line, short enough for an 80-column terminal."""
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.stopping:
            line.append("stopping ", style="bold yellow")
        else:
            line.append("● ", style="bold green")
        stats = self.worker.stats
        parts = [
            ("completed", str(stats.completed), "green"),
            ("failed", str(stats.failed), "red"),
            ("running", f"{self.worker.in_flight}/{self.worker.concurrency}", "cyan"),
            ("activities", str(stats.activities), ""),
        ]
        for index, (name, value, style) in enumerate(parts):
            line.append("  " if index else "")
            line.append(name + " ", style="dim")
            line.append(value, style=style)
        line.append(f"  {rate(self.throughput())}", style="bold")
        line.append(f"  up {_uptime(time.time() - stats.started_at)}", style="dim")
        return line


def rate(per_second: float) -> str:
    """Workflows completed per second, or per minute when that reads better."""
    if per_second >= 1 or per_second == 0:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min"


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
