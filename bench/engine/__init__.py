"""One job, torch only: the training loop, building, the step, data parallelism, checkpoints, evaluation, export.

Imports neither Ray nor MLflow (the GPU machines of the speed suite have only torch and torchvision). The loop
tells its caller what happens through callbacks; executors turn them into events (:mod:`bench.execute.events`).
"""
