"""Workflow ids in URLs: every valid id is reachable, ``/`` included.

Routes take the id with a path converter (``/api/workflows/{workflow_id:path}/events``), so an
id such as ``orders/7`` works written as is. That is ambiguous only for an id that itself ends
in a sub-route's name (``a/events``). Clients that encode the id as one URL segment
(``encodeURIComponent``: ``a%2Fevents``) are read exactly: :class:`EncodedIds` takes the id from
the raw path's first segment before routing, so the route is chosen by what follows it.
"""

from __future__ import annotations

from urllib.parse import unquote

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from loom import limits

PREFIXES = ("/api/workflows/", "/workflows/")
SCOPE_KEY = "loom.workflow_id"
PLACEHOLDER = "-"
"""What stands for an encoded id in the path the router sees; the id itself is kept aside."""


class EncodedIds:
    """ASGI middleware: a first path segment holding ``%2F`` is one whole workflow id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw: bytes = scope.get("raw_path") or b""
            if b"%2f" in raw.lower():
                scope = _rerouted(scope, raw.decode("latin-1").split("?", 1)[0])
        await self.app(scope, receive, send)


def _rerouted(scope: Scope, raw_path: str) -> Scope:
    root: str = scope.get("root_path", "")
    if root and raw_path.startswith(root):
        raw_path = raw_path[len(root) :]
    for prefix in PREFIXES:
        if raw_path.startswith(prefix):
            first, slash, rest = raw_path[len(prefix) :].partition("/")
            if "%2f" not in first.lower():
                return scope
            path = prefix + PLACEHOLDER + slash + unquote(rest)
            return {**scope, "path": root + path, SCOPE_KEY: unquote(first)}
    return scope


def workflow_id(request: Request, workflow_id: str) -> str:
    """The workflow id a request names, checked against the id rule (422 when it breaks it)."""
    value: str = request.scope.get(SCOPE_KEY, workflow_id)
    return limits.check_id(value)
