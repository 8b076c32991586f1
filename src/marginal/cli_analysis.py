"""`marginal analyze` and `marginal report` (registered on cli.app)."""

from .cli import app  # noqa: F401
