"""The face of diffbench: the Typer app (:mod:`bench.cli.app`) and one module per command group.

``diffbench`` (the console script, ``bench.cli.app:app``) and ``python -m bench.cli`` run the app. Importing this
package imports nothing; :mod:`bench.cli.app` imports typer and rich, never torch: commands import what they need
when they run.
"""
