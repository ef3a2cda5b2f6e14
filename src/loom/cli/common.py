"""What every command shares: the ``--database`` option, opening the database, JSON arguments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

import typer

import loom
from loom.cli.errors import CliError, describe
from loom.errors import LoomError
from loom.modules import load_codec

T = TypeVar("T")

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        metavar="URL",
        envvar="LOOM_DATABASE_URL",
        show_envvar=True,
        help="Database URL (sqlite:///path.db) or a SQLite file path. Default: loom.db.",
    ),
]
CodecOption = Annotated[
    str | None,
    typer.Option(
        "--codec",
        metavar="SPEC",
        envvar="LOOM_CODEC",
        show_envvar=True,
        help="How payloads are encoded: codecs joined by '+' (compress, zstd, zlib, "
        "aesgcm:keyfile=PATH, MODULE:ATTRIBUTE) or none. A payload it cannot decode shows as "
        "<encrypted>.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ModulesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--module",
        "-m",
        metavar="MODULE",
        help="Module defining workflows and activities (repeatable). Default: $LOOM_MODULES "
        "(comma separated), else \\[tool.loom] modules in ./pyproject.toml.",
    ),
]


def database_url(value: str | None) -> str | None:
    """A URL as given, or ``sqlite:///<path>`` for a bare file path; None for the default."""
    if not value:
        return None
    return value if "://" in value else f"sqlite:///{value}"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; its errors reach ``main()``, which prints them."""
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def open_database(
    url: str | None, *, initialized: bool = True, codec: str | None = None
) -> AsyncIterator[loom.Database]:
    """Open the database; unless ``initialized`` is False, refuse one ``loom init`` never set up,
    or whose schema is older than this Loom's (``loom init`` upgrades it).

    Payloads are encoded with ``codec`` (else ``$LOOM_CODEC``'s); what it cannot decode is
    shown as the placeholder (queries and retries, which use payloads, fail instead)."""
    chain = load_codec(codec)
    db = loom.Database(
        database_url(url), create=not initialized, codec=chain or "none", placeholders=True
    )
    try:
        await db.open()
    except LoomError:
        raise
    except Exception as exc:  # the file cannot be created, is not a database ...
        raise CliError(f"cannot open database {db.url}: {describe(exc)}") from None
    try:
        if initialized:
            version, needed = await db.schema_version(), db.required_schema_version()
            if version == 0:
                raise CliError(f"database {db.url} is not initialized; run `loom init` first")
            if version < needed:
                raise CliError(
                    f"database {db.url} has schema version {version}, older than this Loom's "
                    f"({needed}); run `loom init` to upgrade it"
                )
        yield db
    finally:
        await db.close()


def parse_json(text: str | None, option: str) -> Any:
    """``text`` decoded as JSON (None when not given); a clear error names the option.

    Strict JSON: ``NaN``, ``Infinity`` and numbers too large for a float (``1e400``) are
    refused, as they cannot be stored and read back as the same value.
    """
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise CliError(f"{option} is not valid JSON: {exc.msg} (at position {exc.pos})") from None
    except ValueError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CliError(f"{option} is not valid JSON: it is nested too deeply") from None


def _not_a_number(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON number; use a finite number or a string")


def _finite(word: str) -> float:
    value = float(word)
    if not math.isfinite(value):
        raise ValueError(f"{word[:40]} is too large for a number; use a string")
    return value


def bounded(value: float, option: str, low: float, high: float) -> None:
    """Refuse, in one line, a number outside ``[low, high]`` (or NaN) given to ``option``."""
    if not low <= value <= high:
        raise CliError(f"{option} must be between {low} and {high}, got {value}", exit_code=2)
