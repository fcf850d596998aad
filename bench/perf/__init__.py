"""Benchmarks and checks that are not commands: the GPU suite, GPU packing, executor overhead, report timing,
loss-term scales and the bad-input matrix. Each module says how to run it (``python -m bench.perf.<name>``)."""
