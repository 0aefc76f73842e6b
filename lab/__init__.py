"""DSpark Lab shared core: config, traces, metrics, run directories and the `lab` command.

Imports only the standard library, numpy, pandas, pyarrow, pydantic and pyyaml (DESIGN.md rule 1).
"""
__version__ = "0.1.0"
