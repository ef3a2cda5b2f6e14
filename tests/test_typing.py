"""The public API is fully typed: user code type-checks under ``mypy --strict``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

pytestmark = pytest.mark.slow  # runs mypy --strict twice

HERE = Path(__file__).parent / "typing"


def _mypy(path: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        ["--strict", "--no-incremental", "--python-version", "3.11", str(path)]
    )
    return stdout + stderr, status


def test_readme_style_user_code_type_checks_strictly() -> None:
    output, status = _mypy(HERE / "user_code.py")
    assert status == 0, output


def test_misuse_is_reported_on_exactly_the_marked_lines() -> None:
    source = (HERE / "misuse.py").read_text().splitlines()
    expected = {i + 1 for i, line in enumerate(source) if line.endswith("# expect-error")}
    output, status = _mypy(HERE / "misuse.py")
    assert status == 1, output
    reported = {int(m.group(1)) for m in re.finditer(r"misuse\.py:(\d+): error", output)}
    assert reported == expected, output
