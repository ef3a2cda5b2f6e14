"""The test helpers themselves: ``eventually`` returns what it waited for or fails naming it, and
every PostgreSQL database a test creates is gone when the test ends, however it was created, so
a long run leaves nothing behind on the server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import eventually, eventually_sync, pg

TESTS_DIR = Path(__file__).resolve().parent

INNER = """
from pathlib import Path

from support import pg

NAMES = Path(__file__).with_name("names.txt")


def name_of(url):
    return url.rsplit("/", 1)[1]


def test_creates_them(tmp_path, db_url, pg_db_url):
    urls = [db_url, pg_db_url, pg.pg_url(tmp_path), pg.create_database()]
    NAMES.write_text("\\n".join(name_of(u) for u in urls if u.startswith("postgresql")))


def test_the_next_test_finds_them_dropped():
    names = NAMES.read_text().split()
    assert len(names) == 4
    assert pg.existing(names) == [], "a test's databases outlived it"
"""


@pytest.mark.postgres
def test_the_databases_a_test_creates_are_dropped_when_it_ends(
    pytester: pytest.Pytester,
) -> None:
    pg.require_pg()
    shutil.copy(TESTS_DIR / "conftest.py", pytester.path / "conftest.py")
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_inprocess(
        "-k", "creates_them[postgres] or dropped", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)


async def test_eventually_returns_the_first_true_value_of_a_sync_or_async_check() -> None:
    calls: list[int] = []

    def grows() -> list[int]:
        calls.append(len(calls))
        return calls if len(calls) >= 3 else []

    async def ready() -> str:
        return "ready"

    assert await eventually(grows, interval=0) == [0, 1, 2]
    assert await eventually(ready) == "ready"
    assert eventually_sync(lambda: 7) == 7


async def test_eventually_fails_naming_what_never_happened() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"after 0\.05 s waiting for the door \(ajar\)"):
        await eventually(lambda: False, 0.05, what=lambda: "the door (ajar)")
    with pytest.raises(pytest.fail.Exception, match=r"after 0\.05 s waiting for the lights"):
        eventually_sync(lambda: 0, 0.05, what="the lights")
