"""Packaging: the optional parts are extras (``otel``, ``metrics``, ``crypto``, and ``all`` for
everything), declared in pyproject.toml as Loom knows them, and a feature used without its extra
raises ``MissingExtraError`` naming the extra to install (simulated by making the import fail)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

import loom
from loom.extras import EXTRAS, require

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared() -> dict[str, list[str]]:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return {k: [re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0] for d in v] for k, v in extras.items()}


def test_each_extra_is_declared_with_its_packages_and_all_has_them_all() -> None:
    extras = declared()
    for extra, packages in EXTRAS.items():
        assert extras[extra] == list(packages), extra
    assert tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["all"] == [
        f"loom-core[{','.join(EXTRAS)}]"
    ]
    assert "loom-core" not in {p for e in EXTRAS for p in extras[e]}  # no extra needs another


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("opentelemetry.trace", "otel"),
        ("prometheus_client", "metrics"),
        ("cryptography", "crypto"),
        ("zstandard", "crypto"),
    ],
)
def test_a_missing_extra_is_named_with_the_command_that_installs_it(
    module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: its import fails
    with pytest.raises(loom.MissingExtraError) as caught:
        require(module, extra, "the feature")
    error = caught.value
    assert error.extra == extra
    assert f"pip install 'loom-core[{extra}]'" in str(error)
    assert f"'{module.split('.')[0]}'" in str(error)
    assert isinstance(error, ImportError) and isinstance(error, loom.ConfigurationError)


def test_an_installed_extra_is_simply_imported() -> None:
    assert require("prometheus_client", "metrics", "Prometheus metrics").__name__ == (
        "prometheus_client"
    )
