"""The ``marginal`` command line (typer).

Every command turns a ``MarginalError`` into a one-line message and exit
code 2. Commands live in small modules that register on ``app``:
``cli_run`` (run, models, export), ``cli_tasks`` (priors),
``cli_analysis`` (analyze, report).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from .errors import MarginalError

app = typer.Typer(
    name="marginal",
    help="Spend a small model's sampling budget on K contextual priors x M samples, "
    "marginalize the answers, and measure the margin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def main() -> None:
    from . import cli_analysis, cli_blend, cli_run, cli_tasks  # noqa: F401  (register commands)

    try:
        app()
    except MarginalError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; stored samples are kept, run the same command again to resume")
        sys.exit(130)

