"""``python -m bench.cli``: the same as the ``diffbench`` console script."""

from bench.cli.app import main

main()
