"""Storage backends behind one contract (:class:`~loom.store.base.Store`), chosen by URL."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from loom.errors import ConfigurationError
from loom.store.base import Store

DEFAULT_URL = "sqlite:///loom.db"


def resolve_url(url: str | None) -> str:
    """``url``, else ``$LOOM_DATABASE_URL``, else ``sqlite:///loom.db`` (current directory)."""
    return url or os.environ.get("LOOM_DATABASE_URL") or DEFAULT_URL


def open_store(url: str, *, create: bool = True) -> Store:
    """A store for ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``.

    SQLite takes ``?synchronous=NORMAL`` to trade the last commits on power loss for speed;
    the default, FULL, loses nothing once a commit returns. With ``create=False`` a missing
    database is an error instead of being created.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        from loom.store.sqlite import SqliteStore

        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc:
            raise ConfigurationError(
                f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        if not path:
            raise ConfigurationError(f"bad SQLite URL {url!r}: no file path")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return SqliteStore(url, path, synchronous=options.get("synchronous", "FULL"), create=create)
    if scheme in {"postgres", "postgresql"}:
        from loom.store.postgres import PostgresStore

        return PostgresStore(url, create=create)
    raise ConfigurationError(
        f"unknown database URL {url!r}: expected sqlite:///path.db or postgresql://..."
    )


__all__ = ["DEFAULT_URL", "Store", "open_store", "resolve_url"]
