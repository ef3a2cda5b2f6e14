"""``loom init``, ``loom replay`` and ``loom web``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from loom import limits
from loom.cli import render
from loom.cli.common import (
    CodecOption,
    DatabaseOption,
    JsonOption,
    ModulesOption,
    bounded,
    open_database,
    run,
)
from loom.cli.errors import CliError
from loom.client import ReplayReport
from loom.masking import mask_credentials
from loom.modules import import_modules, load_codec, require_workflows


def init_command(database: DatabaseOption = None) -> None:
    """Create the database, or bring its schema up to date. Safe to run again."""

    async def migrate() -> tuple[str, int, list[str], int]:
        async with open_database(database, initialized=False) as db:
            before = await db.schema_version()
            applied = await db.migrate_up()
            return db.url, before, applied, await db.schema_version()

    url, before, applied, after = run(migrate())
    if not applied:
        message = f"database {url} is up to date (schema version {after}); nothing to do"
    elif before == 0:
        message = f"created database {url} (schema version {after}; applied {', '.join(applied)})"
    else:
        message = (
            f"migrated database {url} from schema version {before} to {after} "
            f"(applied {', '.join(applied)})"
        )
    render.console().print(render.text(mask_credentials(message)))


def replay_command(
    modules: ModulesOption = None,
    workflow_ids: Annotated[
        list[str] | None,
        typer.Option("--workflow", "-w", metavar="ID", help="Check this workflow (repeatable)."),
    ] = None,
    check_all: Annotated[bool, typer.Option("--all", help="Check every stored workflow.")] = False,
    codec: CodecOption = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay stored histories against the current code; exit 1 if any is not reproduced.

    Run it before deploying changed workflow code. With neither --workflow nor --all, every
    stored workflow is checked.
    """
    if workflow_ids and check_all:
        raise CliError("use either --workflow ID or --all, not both", exit_code=2)
    for workflow_id in workflow_ids or []:
        limits.check_id(workflow_id)
    names = import_modules(modules)

    async def check() -> list[ReplayReport]:
        async with open_database(database, codec=codec) as db:
            require_workflows(db.registry, names)
            return await db.check_replay(list(workflow_ids) if workflow_ids else None)

    reports = run(check())
    bad = [r for r in reports if not r.ok]
    if as_json:
        render.emit_json(
            [
                {"workflow_id": r.workflow_id, "name": r.name, "ok": r.ok, "problem": r.problem}
                for r in reports
            ]
        )
    else:
        out = render.console()
        for report in bad:
            out.print(
                Text.assemble(("NOT REPRODUCED ", "bold red"), render.safe(report.workflow_id))
            )
            out.print(render.text(f"  {report.name}: {report.problem}"))
        summary = f"checked {len(reports)} workflow(s): {len(reports) - len(bad)} reproduced"
        if bad:
            summary += f", {len(bad)} not reproduced by the current code"
        out.print(Text(summary, style="bold red" if bad else "bold green"))
    if bad:
        raise typer.Exit(1)


def web_command(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free).")] = 8000,
    reload: Annotated[bool, typer.Option("--reload", help="Restart on code changes.")] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="LOOM_WEB_TOKEN",
            show_envvar=True,
            help="Require this token on every call (Authorization: Bearer; a browser opens "
            "/?token=TOKEN once, which sets a cookie). "
            "Needed to listen on anything but 127.0.0.1.",
        ),
    ] = None,
    max_payload: Annotated[
        int,
        typer.Option(
            "--max-payload",
            metavar="BYTES",
            envvar="LOOM_MAX_PAYLOAD",
            help="Largest input, state or signal payload a request may store, in bytes "
            "(a request body may be 64 KiB more).",
        ),
    ] = limits.DEFAULT_MAX_PAYLOAD_BYTES,
    modules: ModulesOption = None,
    codec: CodecOption = None,
    database: DatabaseOption = None,
) -> None:
    """Serve the JSON API (documented at /docs) and the dashboard pages."""
    import os
    import signal

    import uvicorn

    bounded(port, "--port", 0, 65535)
    bounded(max_payload, "--max-payload", 1, 1024**3)
    token = token or None
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        raise CliError(
            f"listening on {host} would expose the dashboard to the network; pass --token "
            "TOKEN (or set $LOOM_WEB_TOKEN), or use --host 127.0.0.1",
            exit_code=2,
        )
    names = import_modules(modules)

    async def check() -> str:
        async with open_database(database, codec=codec) as db:
            return db.url

    url = run(check())
    if reload:
        # The reloader imports the app in a new process: hand it the settings through the
        # environment, which app_from_env() reads.
        os.environ["LOOM_DATABASE_URL"] = url
        os.environ["LOOM_MODULES"] = ",".join(names)
        if token:
            os.environ["LOOM_WEB_TOKEN"] = token
        os.environ["LOOM_MAX_PAYLOAD"] = str(max_payload)
        os.environ["LOOM_CODEC"] = codec or os.environ.get("LOOM_CODEC") or "none"
        uvicorn.run(
            "loom.web.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            reload=True,
            timeout_graceful_shutdown=3,
        )
        return
    from loom.web import create_app

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the
    # previous handlers in place: make that a clean exit, as `loom worker` does.
    def exit_cleanly(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_cleanly)
    app = create_app(url, token=token, max_payload_bytes=max_payload, codec=load_codec(codec))
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=3)
