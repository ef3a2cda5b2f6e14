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
        elapsed = now - first_time
        return (done - first_done) / elapsed if elapsed > 0 else 0.0

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
            ("throughput", f"{self.throughput():.1f}/s"),
            ("up", _uptime(time.time() - stats.started_at)),
        ]

    def plain(self) -> str:
        text = "  ".join(f"{name} {value}" for name, value in self.counters())
        return f"{self.worker.worker_id}: {text}"

    def rich(self) -> Text:
        line = Text()
        if self.stopping:
            line.append("stopping ", style="bold yellow")
        else:
            line.append("● ", style="bold green")
        line.append(self.worker.worker_id, style="bold")
        styles = {"completed": "green", "failed": "red", "running": "cyan"}
        for name, value in self.counters():
            line.append("  ")
            line.append(name + " ", style="dim")
            line.append(value, style=styles.get(name, ""))
        return line


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
