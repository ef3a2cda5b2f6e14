"""Finding and importing the modules that define workflows and activities.

The modules named with ``-m/--module`` win; else ``$LOOM_MODULES`` (comma separated); else
``[tool.loom] modules = [...]`` in ``./pyproject.toml``. The current directory is put on the
import path first, so a project's own modules import as they do in its scripts.

Both the command line and the dashboard (``loom web --reload``) load modules this way, so it
lives beside them, not inside either; a failure is a :class:`~loom.errors.ConfigurationError`.
The payload codec they are given (``--codec``, ``$LOOM_CODEC``) is loaded here too, as it may
name an object of one of those modules.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from pathlib import Path

from loom.definitions import Registry
from loom.errors import ConfigurationError
from loom.payload_codecs import CodecChain, codec_from_spec


def module_names(given: list[str] | None) -> list[str]:
    if given:
        return list(given)
    env = os.environ.get("LOOM_MODULES", "")
    if env.strip():
        return [name.strip() for name in env.split(",") if name.strip()]
    return _from_pyproject(Path.cwd() / "pyproject.toml")


def _from_pyproject(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    modules = data.get("tool", {}).get("loom", {}).get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigurationError(f"{path}: [tool.loom] modules must be a list of module names")
    return modules


def _importable_cwd() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def load_codec(spec: str | None) -> CodecChain | None:
    """The payload codec ``spec`` names (``--codec``), else ``$LOOM_CODEC``'s, else None; a
    ``MODULE:ATTRIBUTE`` spec imports like the workflow modules do."""
    if spec is None:
        spec = os.environ.get("LOOM_CODEC")
    _importable_cwd()
    return codec_from_spec(spec)


def import_modules(given: list[str] | None) -> list[str]:
    """Import the workflow modules (see the module docstring); return their names."""
    names = module_names(given)
    _importable_cwd()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise ConfigurationError(f"cannot import module {name!r}: {reason}") from None
    return names


def require_workflows(registry: Registry, names: list[str]) -> None:
    """Fail clearly when the imported modules registered no workflow at all."""
    if registry.workflows():
        return
    found = f"modules {', '.join(names)} define none" if names else "no module was named"
    raise ConfigurationError(
        f"no workflows are registered ({found}): name the modules that define them with "
        "-m MODULE, $LOOM_MODULES or [tool.loom] modules in pyproject.toml"
    )
