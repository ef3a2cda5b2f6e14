"""Optional features and the packages they need: each is a ``loom-core`` extra.

``otel`` (OpenTelemetry traces), ``metrics`` (Prometheus) and ``crypto`` (payload encryption and
zstd compression) are installed with ``pip install 'loom-core[otel]'`` and so on, or all at once
with ``loom-core[all]``. Loom itself never needs them: a feature imports its package when it is
first used, through :func:`require`, so that using it without the extra fails with one clear
error naming the extra to install (:class:`~loom.errors.MissingExtraError`) instead of an
``ImportError`` from deep inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from loom.errors import MissingExtraError

EXTRAS = {
    "otel": ("opentelemetry-api", "opentelemetry-sdk"),
    "metrics": ("prometheus-client",),
    "crypto": ("cryptography", "zstandard"),
}
"""Each extra and the distributions it installs (``pyproject.toml`` declares the same)."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise ``MissingExtraError`` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, module.split(".")[0]) from exc
