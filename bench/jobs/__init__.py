"""What a job is: its spec and hash, grids and their expansion, presets, overrides, compatibility rules, plugins.

Imports neither torch nor Ray nor MLflow: every name, value and combination a user can type is checked here,
in the first second of a command.
"""
