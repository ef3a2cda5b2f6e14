"""Acting on many workflows at once: ``loom cancel|retry|reset`` given a filter instead of an id.

The filter (``--status``, ``--name``, ``--since``) selects the workflows once; the command says
how many and asks before acting (``--yes`` skips the question), then acts on each of exactly
those, one at a time through the client API, and reports each outcome: a table of the outcomes
and one row per workflow it failed for (it finished meanwhile, it has no such step), with exit
status 1 when any failed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table

from loom import limits
from loom.cli import render
from loom.cli.common import open_database, parse_duration, run
from loom.cli.errors import CliError
from loom.client import BulkResult, Database, status_of
from loom.errors import LoomError
from loom.status import WorkflowStatus

StatusFilter = Annotated[
    str | None,
    typer.Option("--status", "-s", help="Act on the workflows of this status (instead of one id)."),
]
NameFilter = Annotated[
    str | None,
    typer.Option("--name", help="Act on the workflows of this type (instead of one id)."),
]
SinceFilter = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="DURATION",
        help="Act on the workflows started within this long (30m, 12h, 7d; instead of one id).",
    ),
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Act without asking for confirmation.")
]

VERBS = {"cancel": "canceled", "retry": "retried", "reset": "reset"}


class Selection:
    """The filter of a bulk action, as given on the command line."""

    def __init__(
        self, action: str, status: str | None, name: str | None, since: str | None
    ) -> None:
        self.action = action
        try:  # a filter the command line got wrong is a usage error, as a bad duration is
            self.status = status_of(status)
            self.name = None if name is None else limits.check_id(name, "workflow name")
        except LoomError as exc:
            raise CliError(str(exc), exit_code=2) from None
        self.since = None if since is None else parse_duration(since, "--since")
        self.since_text = since
        only = {"cancel": WorkflowStatus.RUNNING, "retry": WorkflowStatus.FAILED}.get(action)
        if only is not None:
            if self.status not in (None, only):
                raise CliError(
                    f"{action} acts on {only.value} workflows only; --status "
                    f"{self.status.value} selects none it could {action}",
                    exit_code=2,
                )
            self.status = only

    def describe(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"status {self.status.value}")
        if self.name is not None:
            parts.append(f"name {self.name}")
        if self.since_text is not None:
            parts.append(f"started in the last {self.since_text.strip()}")
        return ", ".join(parts)

    async def ids(self, db: Database) -> list[str]:
        after = None if self.since is None else time.time() - self.since
        return await db.workflow_ids(self.status, name=self.name, created_after=after)


def single_or_many(
    action: str,
    workflow_id: str | None,
    status: str | None,
    name: str | None,
    since: str | None,
) -> Selection | None:
    """The selection of a bulk action, or None for an action on ``workflow_id``; giving both,
    or neither, is a usage error."""
    filtered = status is not None or name is not None or since is not None
    if workflow_id is not None and filtered:
        raise CliError(
            f"give either a WORKFLOW_ID or a filter (--status, --name, --since) to {action}, "
            "not both",
            exit_code=2,
        )
    if workflow_id is None and not filtered:
        raise CliError(
            f"give the WORKFLOW_ID to {action}, or a filter (--status, --name, --since) to "
            f"{action} many",
            exit_code=2,
        )
    if workflow_id is not None:
        limits.check_id(workflow_id)
        return None
    return Selection(action, status, name, since)


def act_on_selection(
    selection: Selection,
    database: str | None,
    yes: bool,
    as_json: bool,
    *,
    reason: str | None = None,
    to_step: str | None = None,
    modules: list[str] | None = None,
    codec: str | None = None,
) -> None:
    """Count the selected workflows, confirm, act on each, report; exit 1 if any failed."""
    from loom.modules import import_modules

    if modules is not None:
        import_modules(modules)
    action = selection.action

    async def select() -> list[str]:
        async with open_database(database, codec=codec) as db:
            return await selection.ids(db)

    chosen = run(select())
    what = f"{len(chosen)} workflow{'' if len(chosen) == 1 else 's'} ({selection.describe()})"
    if not chosen:
        if as_json:
            render.emit_json(report_json(action, []))
        else:
            render.console().print(render.text(f"no workflow matches ({selection.describe()})"))
        return
    target = f" to step {to_step!r}" if to_step is not None else ""
    if not yes:
        confirm(f"{action} {what}{target}?", f"nothing was {VERBS[action]}")

    async def act() -> list[BulkResult]:
        async with open_database(database, codec=codec) as db:
            return await db.bulk_action(action, chosen, reason=reason, to_step=to_step)

    results = run(act())
    if as_json:
        render.emit_json(report_json(action, results))
    else:
        print_report(action, results)
    if any(not r.ok for r in results):
        raise typer.Exit(1)


def confirm(question: str, nothing_done: str) -> None:
    """Ask ``question`` on stderr and read the answer from stdin; anything but yes (end of
    input too) ends the command. (Read directly: ``click.confirm`` writes a space to stdout,
    which would spoil ``--json`` output.)"""
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not sys.stdin.isatty():  # the answer was not echoed: end the question's line
        sys.stderr.write("\n")
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError(f"not confirmed: {nothing_done} (--yes skips the question)")


def report_json(action: str, results: list[BulkResult]) -> dict[str, Any]:
    failed = sum(1 for r in results if not r.ok)
    return {
        "action": action,
        "matched": len(results),
        "succeeded": len(results) - failed,
        "failed": failed,
        "results": [
            {"workflow_id": r.workflow_id, "ok": r.ok, "outcome": r.outcome, "error": r.error}
            for r in results
        ],
    }


def print_report(action: str, results: list[BulkResult]) -> None:
    out = render.console()
    outcomes = Counter(r.outcome if r.ok else "failed" for r in results)
    summary = Table(box=None, header_style="bold", pad_edge=False)
    summary.add_column("OUTCOME")
    summary.add_column("WORKFLOWS", justify="right")
    for outcome, count in sorted(outcomes.items(), key=lambda item: item[0] == "failed"):
        style = "bold red" if outcome == "failed" else "bold green"
        summary.add_row(render.text(outcome, style=style), str(count))
    out.print(summary)
    failures = [r for r in results if not r.ok]
    if failures:
        out.print()
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("FAILED FOR", no_wrap=True)
        table.add_column("ERROR")
        for r in failures:
            table.add_row(render.text(r.workflow_id), render.text(f"{r.outcome}: {r.error}"))
        out.print(table)
    done = len(results) - len(failures)
    line = f"{VERBS[action]} {done} of {len(results)} workflow(s)"
    out.print(render.text(line + (f"; {len(failures)} failed" if failures else "")))
