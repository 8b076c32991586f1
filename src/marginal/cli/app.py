"""The Typer app: every command registered here, by name, from the module that defines it.

Command modules define plain functions and import nothing from this module,
so there is no import cycle; `main` is the console script (`marginal`, and
`python -m marginal`). Left out: plug-in commands from other packages.
"""

from __future__ import annotations

import sys

import typer

from ..errors import MarginalError
from . import analysis, ask, blend, demo, importing, listing, pool, run, serve
from .common import err, print_error

COMMANDS = (
    ("run", run.run),
    ("models", listing.models),
    ("priors", listing.priors),
    ("export", pool.export),
    ("import", importing.import_cmd),
    ("ask", ask.ask),
    ("demo", demo.demo),
    ("replay", pool.replay),
    ("analyze", analysis.analyze),
    ("report", analysis.report),
    ("blend", blend.blend),
    ("serve", serve.serve),
)
"""(name, function) of every command, in the order `marginal --help` lists them."""


def build_app() -> typer.Typer:
    """A Typer app with every command of `COMMANDS` registered."""
    app = typer.Typer(
        name="marginal",
        help="Spend a small model's sampling budget on K contextual priors x M samples, "
        "marginalize the answers, and measure the margin.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, fn in COMMANDS:
        app.command(name)(fn)
    return app


app = build_app()


def main() -> None:
    """Run the CLI: a `MarginalError` is one line on stderr and exit code 2; Ctrl-C keeps stored samples, 130."""
    try:
        app()
    except MarginalError as e:
        print_error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; stored samples are kept, run the same command again to resume")
        sys.exit(130)


__all__ = ["COMMANDS", "app", "build_app", "main"]
