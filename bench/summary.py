"""The one table of ``make bench``: every workload, Loom's figure, DBOS's, the ratio, the target.

    python -m bench.summary [--markdown]

Reads what the benchmarks saved under ``bench/results/`` (``python -m bench``, ``bench.timers``,
``bench.memory``, ``bench.history``, ``bench.bulk_start`` and ``bench.dbos_more``); a workload
whose file is missing shows ``n/a``. Where DBOS was measured two ways (its queue, or a direct
start), its better figure is the one compared. "Loom advantage" is how many times better Loom's
figure is: Loom's over DBOS's for rates, DBOS's over Loom's for times and memory.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import RESULTS


@dataclass(frozen=True)
class Line:
    workload: str
    unit: str
    loom: float | None
    dbos: float | None
    higher_is_better: bool
    target: str = ""
    met: bool | None = None

    @property
    def advantage(self) -> float | None:
        if self.loom is None or self.dbos is None or self.loom <= 0 or self.dbos <= 0:
            return None
        return self.loom / self.dbos if self.higher_is_better else self.dbos / self.loom


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _get(data: Any, *keys: str) -> float | None:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, int | float) else None


def _find(results: Sequence[dict[str, Any]], engine: str, workload: str) -> list[dict[str, Any]]:
    return [
        r
        for r in results
        if r.get("engine") == engine and r.get("workload") == workload and r.get("ok")
    ]


def _best(values: Sequence[float | None], higher_is_better: bool) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if higher_is_better else min(present)


def _check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    return None if value is None else test(value)


def build_lines() -> tuple[list[Line], list[str]]:
    main = _load("latest.json")
    results: list[dict[str, Any]] = main.get("results", [])
    lines: list[Line] = []

    def figure(engine: str, workload: str, key: str, mode: str | None = None) -> list[float | None]:
        return [
            _get(r, "metrics", key)
            for r in _find(results, engine, workload)
            if mode is None or r.get("mode") == mode
        ]

    loom = _best(figure("loom", "throughput", "wf_per_s"), True)
    dbos = _best(figure("dbos", "throughput", "wf_per_s"), True)
    line = Line("SQLite: 3 no-op activities, 1 worker process", "workflows/s", loom, dbos, True)
    met = None if loom is None else loom >= 1500 and (line.advantage or 0) >= 12
    lines.append(replace(line, target=">= 1,500/s and >= 12x", met=met))

    loom = _best(figure("loom", "serial", "wf_per_s"), True)
    dbos = _best(figure("dbos", "serial", "wf_per_s"), True)
    lines.append(Line("SQLite: the same, one client starting back to back", "workflows/s", loom,
                      dbos, True))  # fmt: skip

    for k in (1, 2, 4):
        loom = _best(figure("loom", "pg_throughput", "wf_per_s", str(k)), True)
        dbos = _best(figure("dbos", "pg_throughput", "wf_per_s", str(k)), True)
        plural = "es" if k > 1 else ""
        line = Line(f"PostgreSQL: the same, {k} worker process{plural}", "workflows/s", loom,
                    dbos, True)  # fmt: skip
        if k == 2:
            met = None if loom is None else loom >= 1000 and (line.advantage or 0) >= 8
            line = replace(line, target=">= 1,000/s and >= 8x", met=met)
        lines.append(line)

    loom = _best(figure("loom", "latency", "p50_ms"), False)
    dbos = _best(figure("dbos", "latency", "p50_ms"), False)
    lines.append(Line("SQLite: start to result, idle worker, p50", "ms", loom, dbos, False,
                      "<= 5 ms", _check(loom, lambda v: v <= 5)))  # fmt: skip
    loom = _best(figure("loom", "pg_latency", "p50_ms"), False)
    dbos = _best(figure("dbos", "pg_latency", "p50_ms"), False)
    lines.append(Line("PostgreSQL: start to result, idle worker, p50", "ms", loom, dbos, False,
                      "<= 10 ms", _check(loom, lambda v: v <= 10)))  # fmt: skip

    timers, more, memory, history = (
        _load("timers.json"),
        _load("dbos_more.json"),
        _load("memory.json"),
        _load("history.json"),
    )
    loom = _get(timers, "sqlite", "idle", "p50_ms")
    dbos = _get(more, "timers", "metrics", "idle", "p50_ms")
    lines.append(Line("Durable sleep of 0.1 s, SQLite: late by, p50", "ms", loom, dbos, False,
                      "<= 5 ms", _check(loom, lambda v: v <= 5)))  # fmt: skip
    loom = _get(timers, "postgres", "idle", "p50_ms")
    dbos = _get(more, "timers_postgres", "metrics", "idle", "p50_ms")
    lines.append(Line("Durable sleep of 0.1 s, PostgreSQL: late by, p50", "ms", loom, dbos, False,
                      "<= 5 ms", _check(loom, lambda v: v <= 5)))  # fmt: skip

    loom = _get(memory, "peak_mb")
    dbos = _get(more, "memory", "metrics", "peak_mb")
    n = int(_get(memory, "n") or 10_000)
    done = _get(memory, "completed") == n
    lines.append(Line(f"{n:,} workflows asleep at once: peak RSS", "MB", loom, dbos, False,
                      "< 150 MB, all complete",
                      None if loom is None else loom < 150 and done))  # fmt: skip

    cached = (history.get("variants") or {}).get("parks every 100 (cached)", {})
    first, last = _get(cached, "first_ms"), _get(cached, "last_ms")
    loom = None if first is None or last is None else last / first
    dfirst = _get(more, "history", "metrics", "first_ms")
    dlast = _get(more, "history", "metrics", "last_ms")
    dbos = None if dfirst is None or dlast is None else dlast / dfirst
    events = f"{int(_get(cached, 'events') or 0):,}" if cached else "about 10,000"
    lines.append(Line(f"History of {events} events: last task / first task", "x", loom, dbos,
                      False, "about 1x (no full replay)",
                      _check(loom, lambda v: v <= 1.3)))  # fmt: skip

    bulk = _load("bulk_start.json")
    for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        loop = _get(bulk, backend, "loop_starts_per_s")
        figure_ = _get(bulk, backend, "bulk_starts_per_s")
        count = int(_get(bulk, "n") or 10_000)
        beside = "n/a" if loop is None else f"{loop:,.0f}/s"
        lines.append(Line(f"{label}: bulk start of {count:,} (a loop of single starts: {beside})",
                          "starts/s", figure_, None, True, "faster than the loop",
                          None if figure_ is None or loop is None else figure_ > loop))  # fmt: skip

    machine = main.get("machine", {})
    pg = main.get("settings", {}).get("postgres", {})
    notes = [
        f"Machine: {machine.get('cpu_count', os.cpu_count())} cores "
        f"({machine.get('usable_cores', '?')} usable), Python {machine.get('python', '?')}, "
        f"SQLite {machine.get('sqlite', '?')}",
        "Durability: SQLite journal_mode=WAL, synchronous=FULL (both engines); PostgreSQL "
        f"{pg.get('server_version', '?')} synchronous_commit={pg.get('synchronous_commit', '?')}"
        f", fsync={pg.get('fsync', '?')}",
        f"Throughput: {main.get('settings', {}).get('n', '?')} workflows (PostgreSQL: "
        f"{pg.get('n', '?')}), 16 clients starting them; DBOS's better path (queue or direct)",
        "Loom advantage: Loom's figure over DBOS's for workflows/s, DBOS's over Loom's for ms, "
        "MB and x (above 1: Loom is better)",
        f"Generated {main.get('generated_at', '?')}",
    ]
    return lines, notes


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def print_table(lines: Sequence[Line], notes: Sequence[str]) -> None:
    table = Table(title="Loom beside DBOS: every workload of the performance targets")
    for name, justify in (
        ("Workload", "left"), ("Unit", "left"), ("Loom", "right"), ("DBOS", "right"),
        ("Loom advantage", "right"), ("Target", "left"), ("Met", "center"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for line in lines:
        table.add_row(
            line.workload,
            line.unit,
            _fmt(line.loom, line.unit),
            _fmt(line.dbos, line.unit),
            "n/a" if line.advantage is None else f"{line.advantage:.1f}x",
            line.target,
            {True: "yes", False: "NO", None: ""}[line.met],
        )
    console = Console(width=160)
    console.print(table)
    for note in notes:
        console.print(note)


def markdown(lines: Sequence[Line], notes: Sequence[str]) -> str:
    out = [
        "| workload | unit | Loom | DBOS | Loom advantage | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for line in lines:
        adv = "n/a" if line.advantage is None else f"{line.advantage:.1f}x"
        met = {True: "yes", False: "**no**", None: ""}[line.met]
        out.append(
            f"| {line.workload} | {line.unit} | {_fmt(line.loom, line.unit)} | "
            f"{_fmt(line.dbos, line.unit)} | {adv} | {line.target} | {met} |"
        )
    return "\n".join(out) + "\n\n" + "\n".join(f"{n}  " for n in notes) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the summary table of the last runs.")
    parser.add_argument("--markdown", action="store_true", help="print it as Markdown")
    ns = parser.parse_args(argv)
    lines, notes = build_lines()
    if ns.markdown:
        print(markdown(lines, notes), end="")
    else:
        print_table(lines, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
