"""How grids run: the driver, the grid's state and progress, preflight checks, the output lock and job claims,
storage errors, signals, and the executors (in-process, Ray Tune, Ray Train) with their one event protocol."""
