"""Entry point of the ``loom`` console script."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Loom: durable workflows for Python.")


def main() -> None:
    app()
