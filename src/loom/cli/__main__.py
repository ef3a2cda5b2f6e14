"""``python -m loom.cli``: the same command as the ``loom`` console script."""

from loom.cli.app import main

main()
