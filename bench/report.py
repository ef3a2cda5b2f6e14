"""Turn runner results into comparison rows, print them, and save them as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness import WORKLOADS

DBOS_MODE_LABELS = {"queue": "Queue", "direct": "direct start"}


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    better: str
    dbos_path: str
    loom: float | None
    dbos: float | None
    ratio: float | None


def _metric(result: dict[str, Any] | None, key: str) -> float | None:
    if not result or not result.get("ok"):
        return None
    value = result.get("metrics", {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def build_rows(
    results: Sequence[dict[str, Any]], workloads: Sequence[str], dbos_modes: Sequence[str]
) -> list[Row]:
    def find(engine: str, workload: str, mode: str | None = None) -> dict[str, Any] | None:
        for r in results:
            same = r["engine"] == engine and r["workload"] == workload
            if same and (mode is None or r["mode"] == mode):
                return r
        return None

    rows: list[Row] = []
    for name in workloads:
        for metric in WORKLOADS[name].metrics:
            loom = _metric(find("loom", name), metric.key)
            for mode in dbos_modes or ("",):
                dbos = _metric(find("dbos", name, mode), metric.key) if mode else None
                ratio = round(loom / dbos, 4) if loom is not None and dbos else None
                rows.append(
                    Row(
                        workload=name,
                        metric=metric.label,
                        better="higher" if metric.higher_is_better else "lower",
                        dbos_path=DBOS_MODE_LABELS.get(mode, "-"),
                        loom=loom,
                        dbos=dbos,
                        ratio=ratio,
                    )
                )
    return rows


def build_pg_rows(results: Sequence[dict[str, Any]], processes: Sequence[int]) -> list[Row]:
    """One row per worker-process count: Loom and DBOS workflows/s on the same server."""

    def find(engine: str, k: int) -> dict[str, Any] | None:
        for r in results:
            if r["engine"] == engine and r["workload"] == "pg_throughput" and r["mode"] == str(k):
                return r
        return None

    rows = []
    for k in processes:
        loom = _metric(find("loom", k), "wf_per_s")
        dbos = _metric(find("dbos", k), "wf_per_s")
        rows.append(
            Row(
                workload=f"PostgreSQL throughput, {k} worker process{'es' if k > 1 else ''}",
                metric="workflows/s",
                better="higher",
                dbos_path=f"Queue, {k} process{'es' if k > 1 else ''}",
                loom=loom,
                dbos=dbos,
                ratio=round(loom / dbos, 4) if loom is not None and dbos else None,
            )
        )
    return rows


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


HEADERS = ("Workload", "Metric", "Better", "DBOS path", "Loom", "DBOS", "Loom/DBOS")


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.workload,
        row.metric,
        row.better,
        row.dbos_path,
        _fmt(row.loom),
        _fmt(row.dbos),
        _ratio(row.ratio),
    )


def print_table(rows: Sequence[Row], title: str, notes: Sequence[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(rows, title, notes)
        return
    table = Table(title=title)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if i >= 4 else "left", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True, highlight=False, markup=False)


def _print_plain(rows: Sequence[Row], title: str, notes: Sequence[str]) -> None:
    lines = [HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    print(title)
    for line in lines:
        print(
            "  ".join(
                cell.rjust(w) if i >= 4 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    for note in notes:
        print(note)


def write_json(path: Path, payload: dict[str, Any], rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**payload, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
