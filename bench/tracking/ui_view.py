"""Make the MLflow UI open on what a benchmark user wants: the runs table grouped by setting, the scores as columns.

MLflow 3.x opens an experiment on its GenAI overview (traces, an assistant) unless the experiment says it is
a model-training one, and its runs table starts with child runs folded under their parent and no metric
column. Two documented UI hooks fix that without touching MLflow:

* the experiment tag ``mlflow.experimentKind = custom_model_development`` (the "machine learning" kind);
* a *shared view state*: an experiment tag ``mlflow.sharedViewState.<key>`` holding the runs page's UI state
  (visible columns, expanded parent runs, sort order) as JSON, loaded by the URL parameter
  ``viewStateShareKey=<key>`` — which is the deep link ``diffbench ui`` prints.

Nothing here imports torch.
"""

from __future__ import annotations

import json
from typing import Any

from bench.tracking import schema as S

#: The experiment tag MLflow's UI reads to choose between its GenAI and model-training layouts.
KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"
#: The share key of diffbench's runs view (``mlflow.sharedViewState.<key>``).
VIEW_KEY = "diffbench"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"

_TAG_COLUMNS = (*S.JOB_TAGS, S.RECIPE_PRESET)


def _column(kind: str, name: str) -> str:
    """The runs table's canonical column key: ``metrics.`best_top1```."""
    return f"{kind}.`{name}`"


def view_state(metrics: list[str], expanded: list[str]) -> dict[str, Any]:
    """The runs page state: grid axes and scores as columns, runs grouped by setting, newest first."""
    columns = [_column("tags", t) for t in _TAG_COLUMNS]
    for m in metrics:
        columns += [_column("metrics", f"best_{m}"), _column("metrics", f"last_{m}")]
    columns += [_column("metrics", "images_per_s"), _column("metrics", "train_time_s")]
    # `diffbench tune`'s trial runs (role ``trial``): their score and why they ended.
    columns += [_column("metrics", S.BEST_SCORE), _column("tags", S.TRIAL_INDEX), _column("tags", S.STOP_REASON)]
    # Grouped by the setting tag (method, pair, dataset in one short value: the UI's group label stays readable;
    # grouping by the five axis tags made it "Group: dataset: …, teacher: …" cut after the first), the table
    # shows one row per setting with the seeds' average and each job as a child row; grid parent runs (which
    # carry no such tag) fall in one group of their own.
    # (A shared view cannot expand parent runs: MLflow leaves run-specific state like runsExpanded out of it.)
    group = [{"mode": "tag", "groupByData": S.SETTING}]
    return {
        "selectedColumns": columns,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": group},
        "runsExpanded": {run_id: True for run_id in expanded},
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }


def mark_experiment(client: Any, experiment_id: str, metrics: list[str], parent_runs: list[str]) -> None:
    """Tag the experiment as model training and store the diffbench view (expanding ``parent_runs``)."""
    exp = client.get_experiment(experiment_id)
    if exp.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    old: dict[str, Any] = {}
    try:
        old = json.loads(exp.tags.get(VIEW_TAG) or "{}")
    except ValueError:
        old = {}
    expanded = [*dict.fromkeys([*(old.get("runsExpanded") or {}), *parent_runs])]
    known = [c.split("`")[1].removeprefix("best_") for c in old.get("selectedColumns", [])
             if c.startswith("metrics.`best_")]  # fmt: skip
    metrics = [*dict.fromkeys([*known, *metrics])]
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(view_state(metrics, expanded[-200:])))


def runs_url(base: str, experiment_id: str) -> str:
    """The deep link to the experiment's runs table in diffbench's view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
