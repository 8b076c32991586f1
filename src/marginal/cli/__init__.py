"""The ``marginal`` command line (typer + rich).

Every command turns a `MarginalError` into a one-line message and exit code 2.
Layout, one job per module:

- ``app``: builds the Typer app, registers every command, ``main``.
- ``common``: consoles, the error line, file names, the names help lists.
- ``progress``: `ProgressBar` (run and blend).
- ``run``: ``marginal run`` (options -> `marginal.config.RunConfig` -> `execute_run`).
- ``ask``: ``marginal ask``; ``demo``: ``marginal demo``.
- ``listing``: ``marginal models``, ``marginal priors``.
- ``pool``: ``marginal export``, ``marginal replay``.
- ``analysis``: ``marginal analyze``, ``marginal report``; ``render``: their rich tables.
- ``blend``: ``marginal blend``.

Left out: shell completion and a config file for defaults.
"""

from __future__ import annotations

from .app import app, build_app, main

__all__ = ["app", "build_app", "main"]
