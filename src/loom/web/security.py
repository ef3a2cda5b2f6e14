"""Request checks applied before any route: token, Host, cross-site requests and body size.

* With a token, every call except the static script and stylesheet needs it, as
  ``Authorization: Bearer <token>`` or the ``loom_token`` cookie. A page load or an
  ``EventSource`` can only put it in the URL: a GET with a valid ``?token=`` is answered with a
  redirect to the same URL without it that sets the cookie (HttpOnly, SameSite=Strict), so the
  token leaves the address bar, the links and the history, and the page's own requests carry
  the cookie. Tokens are compared in constant time; the access log never shows them
  (:class:`TokenLogFilter`).
* Without a token the server is meant for this machine only: a ``Host`` header other than a
  loopback name is refused, so a web page cannot reach the API through DNS rebinding.
* A state-changing request (POST ...) is refused when its ``Origin`` is not this server or its
  ``Sec-Fetch-Site`` says ``cross-site`` (403), and when it has a body that is not
  ``application/json`` (415): a form on another site cannot act on workflows. No CORS headers
  are ever sent.
* A request body above the limit is refused with 413 before the route sees it: at once from its
  ``Content-Length``, else as soon as the bytes read pass the limit; nothing is stored.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COOKIE = "loom_token"
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*", re.IGNORECASE)


def token_matches(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _host_name(host: str) -> str:
    """``example.com`` from ``example.com:8000``; ``[::1]`` stays bracketed."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def respond(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a JSON error ``{"error": message}`` straight from a middleware."""
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware enforcing the token, host and cross-site checks above."""

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
        problem = self._host_problem(headers)
        if problem is None and self.token is not None and scope["method"] in ("GET", "HEAD"):
            query = _query_token(scope)
            if query is not None and token_matches(query, self.token):
                await _exchange(scope, send, self.token)
                return
        problem = problem or self._problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await respond(send, status, message, extra)

    def _host_problem(self, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return 403, f"host {host[:100]!r} is not served here; use http://127.0.0.1"
        return None

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        path: str = scope["path"]
        if (
            self.token is not None
            and not path.startswith(PUBLIC_PREFIXES)
            and not token_matches(_given_token(headers), self.token)
        ):
            return 401, "a valid token is required (Authorization: Bearer <token>)"
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != host:
                return 403, "cross-origin requests are refused"
            if headers.get("sec-fetch-site", "").lower() == "cross-site":
                return 403, "cross-site requests are refused"
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            if (kind or has_body) and kind != "application/json":
                return 415, "send the body as JSON (Content-Type: application/json)"
        return None


def _given_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return unquote(value)
    return None


def _query_token(scope: Scope) -> str | None:
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    values = [v for k, v in pairs if k == "token"]
    return values[-1] if values else None


async def _exchange(scope: Scope, send: Send, token: str) -> None:
    """Answer a GET carrying a valid ``?token=``: the cookie, and the same URL without it."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    rest = urlencode([(k, v) for k, v in pairs if k != "token"])
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    location = raw.decode("latin-1") + (f"?{rest}" if rest else "")
    cookie = f"{COOKIE}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


class BodyLimit:
    """ASGI middleware: refuses (413) a request body above ``max_bytes`` before any route."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await respond(send, 413, self._message(declared.decode("latin-1")))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await respond(send, 413, self._message(f"more than {self.max_bytes}"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self, size: str) -> str:
        return (
            f"the request body ({size} bytes) is above the limit of {self.max_bytes} bytes "
            "(loom web --max-payload)"
        )


class TokenLogFilter(logging.Filter):
    """Hides the value of ``token=`` in log lines (uvicorn's access log prints query strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redacted(a) for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = TOKEN_IN_QUERY.sub(r"\1***", record.msg)
        return True


def _redacted(value: Any) -> Any:
    return TOKEN_IN_QUERY.sub(r"\1***", value) if isinstance(value, str) else value


def hide_tokens_in_logs() -> None:
    """Install :class:`TokenLogFilter` on uvicorn's loggers (once)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenLogFilter) for f in logger.filters):
            logger.addFilter(TokenLogFilter())
