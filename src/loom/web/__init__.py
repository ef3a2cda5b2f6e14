"""``loom web``: a JSON API, server-sent event streams and a small dashboard over one database.

:func:`create_app` builds the FastAPI application; ``loom web`` serves it with uvicorn. The
dashboard pages are static HTML driven by a hand-written script that calls the same JSON API.
"""

from loom.web.app import create_app

__all__ = ["create_app"]
