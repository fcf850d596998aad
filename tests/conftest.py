"""Test-wide settings: small thread pools so parallel helpers and CI's 2 cores are not oversubscribed."""

import os

import torch

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
