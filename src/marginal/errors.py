"""User-facing errors.

A `MarginalError` carries a one-line message that names the bad input and what
was expected. The CLI prints it and exits with code 2; it never shows a
traceback. Programming errors (bugs) are left as ordinary exceptions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MarginalError(Exception):
    """A clear, one-line error about the user's input or environment."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> MarginalError:
    """An error for a name that is not in a registry, with a near match."""
    choices = sorted(choices)
    return MarginalError(f"unknown {kind} {name!r}{suggest(name, choices)}; expected one of: {', '.join(choices)}")
