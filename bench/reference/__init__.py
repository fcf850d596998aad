"""Package data: ``published.csv``, the papers' numbers that ``diffbench report`` shows beside ours.

A package (not a folder of the source tree) so that a wheel install ships it and
:func:`importlib.resources.files` finds it wherever diffbench is installed.
"""
