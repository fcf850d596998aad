"""``python -m bench.speed``: the step benchmark without typer/rich (GPU machines with only torch)."""

from bench.speed.steps import main

main()
