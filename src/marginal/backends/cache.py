"""`Engines`: the engines one run has loaded, one per (model spec, options).

A session, a CLI run and each Ray worker keep one cache: the run's model and
every model a prior names (``Prior.model``) are loaded on first use with
``load_backend`` and the cache's options, and ``close`` closes them all::

    engines = Engines(n_threads=4)
    backend_for = engines.backend_for("qwen2.5-coder-0.5b")   # Prior -> Backend
    try:
        execute(plan, task, backend_for, store)
    finally:
        engines.close()

Left out: evicting engines (a run keeps what it loaded until ``close``) and
sharing one engine between processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..types import Prior
from .base import Backend


def _frozen(value: Any) -> Any:
    """A hashable stand-in for an option value (dicts, lists and sets frozen recursively)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_frozen(v) for v in value)
    return value


class Engines:
    """Loaded engines keyed by (model spec, options); see the module docstring.

    ``options`` are the cache's backend options (``load_backend``'s), shared by
    every engine it loads; ``get`` may add more for one engine.
    """

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)
        self._loaded: dict[tuple[str, Any], Backend] = {}

    def _key(self, model: str, options: dict[str, Any]) -> tuple[str, Any]:
        return (model, _frozen(options))

    def get(self, model: str, **options: Any) -> Backend:
        """The engine of ``model`` with the cache's options (and ``options``), loaded on first use."""
        opts = {**self.options, **options}
        key = self._key(model, opts)
        if key not in self._loaded:
            from . import load_backend  # looked up at call time (tests patch it)

            self._loaded[key] = load_backend(model, **opts)
        return self._loaded[key]

    def add(self, model: str, backend: Backend) -> Backend:
        """Serve ``backend`` (already loaded) as the engine of ``model`` with the cache's options;
        it is closed with the others. Returns it."""
        self._loaded[self._key(model, self.options)] = backend
        return backend

    def backend_for(self, model: str) -> Callable[[Prior], Backend]:
        """``backend_for(prior)`` for a run of ``model``: the prior's own model when it names one, else ``model``."""
        return lambda prior: self.get(prior.model or model)

    def __len__(self) -> int:
        return len(self._loaded)

    def close(self) -> None:
        """Close every engine (each once) and forget them."""
        seen: set[int] = set()
        try:
            for backend in self._loaded.values():
                if id(backend) not in seen:
                    seen.add(id(backend))
                    backend.close()
        finally:
            self._loaded.clear()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
