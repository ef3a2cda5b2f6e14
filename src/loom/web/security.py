"""Request checks applied before any route: bearer token, Host and Origin.

* With a token, every call except the static script and stylesheet needs it, as
  ``Authorization: Bearer <token>`` or ``?token=<token>`` (what ``EventSource`` and a page load can
  send). Tokens are compared in constant time.
* Without a token the server is meant for this machine only: a ``Host`` header other than a
  loopback name is refused, so a web page cannot reach the API through DNS rebinding.
* A state-changing request (POST ...) whose ``Origin`` is not this server is refused, so another
  site open in the same browser cannot act on workflows. No CORS headers are ever sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_matches(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _host_name(host: str) -> str:
    """``example.com`` from ``example.com:8000``; ``[::1]`` stays bracketed."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware enforcing the checks above on HTTP requests."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] | None
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        body = orjson.dumps({"error": message})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return 403, f"host {host!r} is not served here; use http://127.0.0.1"
        path: str = scope["path"]
        if (
            self.token is not None
            and not path.startswith(PUBLIC_PREFIXES)
            and not token_matches(_given_token(scope, headers), self.token)
        ):
            return 401, "a valid token is required (Authorization: Bearer <token>)"
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != host:
                return 403, "cross-origin requests are refused"
        return None


def _given_token(scope: Scope, headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[-1] if values else None
