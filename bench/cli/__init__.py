"""The face of diffbench: the Typer app (:mod:`.app`) and one module per command group.

``diffbench`` (the console script) and ``python -m bench.cli`` run :data:`app`. Importing this package imports
typer and rich, never torch: commands import what they need when they run.
"""

from bench.cli.app import app, main

__all__ = ["app", "main"]
