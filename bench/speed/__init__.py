"""The library behind ``diffbench speed``: training-step timing per method and speed variant, the data pipeline,
data-parallel scaling and FLOP counts. Needs torch and torchvision only: ``python -m bench.speed`` runs on a
machine without Ray, MLflow, typer or rich."""
