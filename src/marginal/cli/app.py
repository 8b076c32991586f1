"""The Typer app: every command registered here, by name, from the module that defines it.

Command modules define plain functions and import nothing from this module,
so there is no import cycle; `main` is the console script (`marginal`, and
`python -m marginal`). Left out: plug-in commands from other packages.
"""

from __future__ import annotations

import signal
import sys

import typer

from ..backends.streaming import STOP
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


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a job scheduler, ``kill``) is handled as Ctrl-C: finished samples are committed.
    Generation loops also stop on `STOP` (in case this exception is lost); later signals are
    ignored, so that a second one cannot cut the clean-up short."""
    STOP.set()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _interrupted() -> None:
    err.print("interrupted; stored samples are kept, run the same command again to resume")
    sys.exit(143 if STOP.is_set() else 130)  # STOP: set by SIGTERM only


def main() -> None:
    """Run the CLI: a `MarginalError` is one line on stderr and exit code 2; Ctrl-C keeps stored
    samples, 130; SIGTERM does the same, 143 (`marginal serve` installs uvicorn's own handlers)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except MarginalError as e:
        print_error(str(e))
        sys.exit(2)
    except SystemExit as e:
        if e.code == 130:  # typer turns KeyboardInterrupt into a silent exit 130
            _interrupted()
        raise
    except KeyboardInterrupt:
        _interrupted()


__all__ = ["COMMANDS", "app", "build_app", "main"]
