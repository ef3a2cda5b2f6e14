"""Helpers shared by the tests; import them as ``from support import ...``.

- :mod:`support.workers`: ``worker(db)``, the in-process worker every engine test uses, and
  ``of_type(events, kind)``.
- :mod:`support.polling`: ``eventually(check)``, the one way a test waits for something.
- :mod:`support.pg`: fresh PostgreSQL databases per test, dropped when the test ends.
- :mod:`support.replay`: hand-built histories and workflows for the pure replay-core tests.

``tests/`` is on ``sys.path`` (pytest's rootdir-relative import of ``conftest.py``; processes
the tests start get ``PYTHONPATH=tests``), so ``support`` imports from anywhere in the suite.
"""

from __future__ import annotations

from support.polling import eventually, eventually_sync
from support.workers import of_type, worker

__all__ = ["eventually", "eventually_sync", "of_type", "worker"]
