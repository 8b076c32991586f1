"""`marginal priors`: list a task's prior bank (registered on cli.app)."""

from .cli import app  # noqa: F401
