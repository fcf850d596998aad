"""diffbench's driver side: the CLI, grids, the training loop, executors, tracking, reports and benchmarks.

A regular package (not a namespace one), so an installed diffbench never merges with another folder named
``bench`` on ``sys.path``. Importing it imports nothing else: ``diffbench --help`` stays fast.
"""
