"""The face of diffbench: the Typer app (:mod:`bench.cli.app`) and one module per command group.

``diffbench`` (the console script, ``bench.cli.app:app``) and ``python -m bench.cli`` run the app. Importing this
package imports nothing but :mod:`bench.clock` (whose import is the process's start for every elapsed time shown);
:mod:`bench.cli.app` imports typer and rich, never torch: commands import what they need when they run.
"""

from bench import clock  # noqa: F401 - first thing: the start of the process's clock
