"""`marginal run`, `marginal models`, `marginal export` (registered on cli.app)."""

from .cli import app  # noqa: F401
