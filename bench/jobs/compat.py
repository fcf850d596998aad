"""What keeps results of older diffbench versions valid (torch-free, imported by job identity and reports)."""

from __future__ import annotations

from typing import Any

#: Method hyper-parameters added after jobs were run, with the value that reproduces the behaviour from before
#: they existed. At that value they stay out of the job hash (and a report treats an older run's missing
#: ``hp.<name>`` as that value), so jobs finished before the parameter existed are still found, not retrained.
NEUTRAL_HPARAMS: dict[str, Any] = {"feat_norm": "none"}
