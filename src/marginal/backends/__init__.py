"""Backends: the Backend protocol and the engines behind it."""

from .base import Backend

__all__ = ["Backend"]
