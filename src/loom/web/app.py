"""The application factory: :func:`create_app` wires the API, the pages and the request guard."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

import loom
from loom import limits
from loom.client import Database
from loom.definitions import Registry
from loom.errors import (
    ConfigurationError,
    InvalidIdError,
    LoomError,
    MissingExtraError,
    PayloadDecodeError,
    PayloadError,
    PayloadTooLargeError,
    QueryArgumentsError,
    QueryFailedError,
    QueryNotFoundError,
    StoreError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyExistsError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from loom.masking import mask_credentials
from loom.modules import import_modules, load_codec
from loom.payload_codecs import CodecChain
from loom.web import streams
from loom.web.api import router
from loom.web.paths import EncodedIds
from loom.web.security import LOOPBACK_HOSTS, BodyLimit, Guard, hide_tokens_in_logs

log = logging.getLogger("loom.web")

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER_PREFIX = "/static/swagger-ui"
"""Where Swagger UI's own files (from the swagger-ui-bundle package) are served."""

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (WorkflowNotFoundError, 404),
    (QueryNotFoundError, 404),
    (QueryArgumentsError, 400),
    (QueryFailedError, 422),
    (WorkflowNotRunningError, 409),
    (WorkflowAlreadyExistsError, 409),
    (UnknownWorkflowTypeError, 422),
    (InvalidIdError, 422),
    (PayloadTooLargeError, 413),
    (PayloadDecodeError, 422),
    (PayloadError, 422),
    (ConfigurationError, 422),
    (StoreError, 503),
)
BODY_ENVELOPE = 64 * 1024
"""What a request body may hold beyond one payload (the names, the id, the JSON around)."""


def create_app(
    database_url: str | None = None,
    *,
    database: Database | None = None,
    token: str | None = None,
    registry: Registry | None = None,
    allowed_hosts: Iterable[str] | None = None,
    poll_interval: float = 0.5,
    heartbeat: float = 15.0,
    max_payload_bytes: int | None = None,
    stream_lifetime: float | None = 3600.0,
    stream_event_bytes: int = streams.STREAM_EVENT_BYTES,
    codec: CodecChain | None = None,
) -> FastAPI:
    """The dashboard application over one database.

    Give either ``database_url`` (the database is opened in the app's lifespan and closed with
    it) or an open ``database`` (used as is; the caller closes it). ``registry`` is where
    workflow names are looked up (default: the database's). With a ``token``, every call needs
    it; without one only loopback ``Host`` names are served, unless ``allowed_hosts`` says
    otherwise. ``poll_interval`` and ``heartbeat`` pace the event streams; a stream ends after
    ``stream_lifetime`` seconds (the browser reconnects and resumes) and sends payloads above
    ``stream_event_bytes`` as a link. ``max_payload_bytes`` (default: the database's, else
    4 MiB) bounds each value a request stores, and becomes the limit of a ``database`` given
    open; a request body may be that plus 64 KiB (413). ``codec`` encodes and decodes the
    payloads of a database opened from ``database_url`` (default: none, whatever
    ``$LOOM_CODEC`` says); a payload it cannot decode is shown as ``"<encrypted>"``.
    """
    if database is not None and database_url is not None:
        raise ConfigurationError("give create_app() a database_url or a database, not both")
    if token is not None and not token:
        raise ConfigurationError("the web token must not be empty")
    if max_payload_bytes is not None and max_payload_bytes < 1:
        raise ConfigurationError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
    payload = max_payload_bytes or (
        database.max_payload_bytes if database is not None else limits.DEFAULT_MAX_PAYLOAD_BYTES
    )
    if database is not None and max_payload_bytes is not None:
        database.max_payload_bytes = max_payload_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if database is not None:
            yield
            return
        db = Database(
            database_url,
            registry=registry,
            create=False,
            max_payload_bytes=payload,
            codec=codec or "none",
            placeholders=True,
        )
        _count_from_the_start(db)
        await db.open()
        app.state.database = db
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(
        title="Loom",
        version=loom.__version__,
        description="Durable workflows: read and act on the workflows of one Loom database.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.database = database
    if database is not None:
        _count_from_the_start(database)
    app.state.registry = registry or (database.registry if database else loom.default_registry)
    app.state.poll_interval = poll_interval
    app.state.heartbeat = heartbeat
    app.state.stream_lifetime = stream_lifetime
    app.state.stream_event_bytes = stream_event_bytes
    hosts = allowed_hosts if allowed_hosts is not None else (None if token else LOOPBACK_HOSTS)
    # The last added runs first: the guard, then the body limit, then the id in the path.
    app.add_middleware(EncodedIds)
    app.add_middleware(BodyLimit, max_bytes=payload + BODY_ENVELOPE)
    app.add_middleware(Guard, token=token, allowed_hosts=hosts)
    _add_error_handlers(app)
    app.include_router(router)
    _add_pages(app)
    hide_tokens_in_logs()
    return app


def _count_from_the_start(database: Database) -> None:
    """Record metrics from now on (the starts made through the API), so ``/metrics`` counts
    everything this process did; without the ``metrics`` extra, ``/metrics`` says how to get
    it and the rest of the dashboard works as ever."""
    with suppress(MissingExtraError):
        database.enable_metrics()


def app_from_env() -> FastAPI:
    """The factory ``loom web --reload`` gives uvicorn: settings come from the environment
    (``LOOM_DATABASE_URL``, ``LOOM_WEB_TOKEN``, ``LOOM_MODULES``, ``LOOM_CODEC``)."""
    import_modules(None)
    payload = os.environ.get("LOOM_MAX_PAYLOAD")
    return create_app(
        os.environ.get("LOOM_DATABASE_URL") or None,
        token=os.environ.get("LOOM_WEB_TOKEN") or None,
        max_payload_bytes=int(payload) if payload else None,
        codec=load_codec(None),
    )


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    async def loom_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StoreError):
            # The store's message may name the server; it goes to the log, not to the client.
            detail = mask_credentials(str(exc))
            log.error("database error on %s %s: %s", request.method, request.url.path, detail)
            return _error(503, "database unavailable; try again later")
        for kind, status in ERROR_STATUS:
            if isinstance(exc, kind):
                return _error(status, " ".join(str(exc).split()))
        return _error(500, " ".join(str(exc).split()))

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors
        ]
        return _error(422, "invalid request: " + "; ".join(parts), detail=errors)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Never the exception's text: a driver error can carry hosts, users or data.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")

    app.add_exception_handler(LoomError, loom_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _add_pages(app: FastAPI) -> None:
    pages = {name: (STATIC / name).read_bytes() for name in ("index.html", "workflow.html")}

    def page(name: str) -> Response:
        # Static files: the script fills them in from the API, so no request data is ever
        # interpolated into HTML on the server.
        return Response(pages[name], media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    @app.get("/definitions", include_in_schema=False)
    @app.get("/charts", include_in_schema=False)
    @app.get("/queue", include_in_schema=False)
    @app.get("/queues", include_in_schema=False)
    async def index() -> Response:
        return page("index.html")  # the script shows the view its path names

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # Prometheus's conventional path: the text format, the queue read from the database now.
        db: Database = request.app.state.database
        try:
            body = await db.scrape_metrics()
        except MissingExtraError as exc:
            return _error(501, str(exc))
        assert db.metrics is not None
        return Response(
            body, media_type=db.metrics.content_type, headers={"Cache-Control": "no-store"}
        )

    @app.get("/workflows/{workflow_id:path}", include_in_schema=False)
    async def workflow_page(workflow_id: str) -> Response:
        return page("workflow.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # Swagger UI's files come from the fastapi-swagger package (a current Swagger UI, which
        # reads OpenAPI 3.1), served from here: the docs work offline, nothing is fetched from
        # a CDN. No token in the page: the browser sends its cookie (or the caller's header).
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Loom API",
            swagger_js_url=f"{SWAGGER_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_PREFIX}/favicon-32x32.png",
        )

    swagger_files = resources.files("fastapi_swagger") / "resources"
    app.mount(SWAGGER_PREFIX, StaticFiles(directory=str(swagger_files)), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
