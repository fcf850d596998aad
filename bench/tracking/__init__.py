"""MLflow: the tracker (the grid's one writer), model logging, the UI's view and server, and the one schema of
tag, param and artifact names that reports read too. Importing the package imports nothing else."""
