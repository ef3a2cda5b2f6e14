"""``python -m tests.chaos``: see chaos.runner."""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]  # tests/: `chaos`, `test_pg_restart`

from chaos.runner import main  # noqa: E402

sys.exit(main())
