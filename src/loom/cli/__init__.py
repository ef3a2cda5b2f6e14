"""The ``loom`` command line (Typer + Rich), a thin layer over :mod:`loom.client`."""

from loom.cli.app import app, main

__all__ = ["app", "main"]
