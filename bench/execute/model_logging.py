"""The best student of a finished job as an MLflow model, loadable by URI (``runs:/<run id>/student``).

The grid's driver calls :func:`log_model` once per finished job, before its run is marked finished. It lives with
the driver because it needs both the engine (to rebuild the student from its file) and MLflow. The model is logged with
``mlflow.pytorch.log_model`` in MLflow's ``pt2`` format (``torch.export``, safe to load and needing no
diffbench code: ``mlflow.pytorch.load_model(uri)`` gives a module that maps ``images`` ``[batch, 3, H, W]``
to ``logits``), with a tensor signature whose batch is dynamic; a model ``torch.export`` cannot capture is
logged pickled instead (loading it then needs diffbench installed). Detection students, which take lists of
images, are always pickled.

Like the rest of the tracking, nothing is set globally: the tracker's URI is used for this one call only,
and the model (an MLflow 3 *logged model*) is created in the run's experiment and linked to the run.
Logging a model is an extra: any failure becomes one warning line and the grid goes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.tracking.schema import MODEL_ARTIFACT
from methods.errors import first_line

#: The name of the logged model inside its run (``runs:/<run id>/student``).
MODEL_NAME = MODEL_ARTIFACT


def log_model(
    run_id: str,
    workdir: Path | str,
    tracking_uri: str,
    warn: Callable[[str], None] | None = None,
) -> str | None:
    """Log the job's best student (``student_best.pt``, else ``student.pt``) as the run's ``student`` model.

    Args:
        run_id: the job's MLflow run (running or finished).
        workdir: the job folder holding the student file.
        tracking_uri: the store the run lives in (the tracker's ``uri``).
        warn: where the one warning line goes when logging fails (default: the ``bench`` logger).

    Returns:
        ``runs:/<run id>/student``, or ``None`` when nothing was logged (the reason went to ``warn``).
    """
    try:
        return _log(run_id, Path(workdir), tracking_uri)
    except Exception as err:  # noqa: BLE001 - an extra must never fail a grid
        first = first_line(err)
        line = f"run {run_id}: student not logged as an MLflow model: {type(err).__name__}: {first}"
        (warn or logging.getLogger("bench").warning)(line)
        return None


def _log(run_id: str, workdir: Path, tracking_uri: str) -> str:
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from bench.engine.export import example_input, find_student_file, load_student, logits, traceable

    student = load_student(find_student_file(workdir))
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    kwargs: dict = {}
    model = student.model
    if student.task != "detection":
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        example = example_input(student)
        model = traceable(student.model, example)
        out = logits(student.model, example)
        kwargs = {
            "input_example": example.numpy(),
            "signature": ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]), "images")]),
                outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *out.shape[1:]), "logits")]),
            ),
        }
    formats = ["pt2", "pickle"] if kwargs else ["pickle"]
    for i, fmt in enumerate(formats):
        logged = client.create_logged_model(experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id)
        try:
            with _scoped_uri(tracking_uri), _quiet_mlflow():
                mlflow.pytorch.log_model(model, name=MODEL_NAME, model_id=logged.model_id, run_id=run_id,
                                         serialization_format=fmt, pip_requirements=requirements,
                                         **(kwargs if fmt == "pt2" else {}))  # fmt: skip
            break
        except Exception:
            client.delete_logged_model(logged.model_id)  # no half-logged model for runs:/ to find
            if i == len(formats) - 1:
                raise
    return f"runs:/{run_id}/{MODEL_NAME}"


@contextlib.contextmanager
def _scoped_uri(uri: str) -> Iterator[None]:
    """MLflow's tracking URI set to ``uri`` for one call and restored after (``log_model`` has no argument)."""
    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # pragma: no cover - a future MLflow without the helper
        import mlflow

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
        return
    with _use_tracking_uri(uri):
        yield


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """No MLflow info/warning lines (pickle caution, requirement notes) over the grid's live view."""
    import warnings

    log = logging.getLogger("mlflow")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
