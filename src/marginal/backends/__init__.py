"""Backends: the Backend protocol and the engines behind it.

``load_backend(model)`` maps a model name to an engine: a catalog name, a
``.gguf`` path or ``hf:repo/file.gguf`` run in process on llama.cpp.
Left out here: the HTTP, vLLM and transformers engines (own modules).
"""

from __future__ import annotations

from .base import Backend

__all__ = ["Backend", "load_backend"]


def load_backend(model: str, **options) -> Backend:
    """An engine for ``model``; ``options`` go to the engine's constructor."""
    from ..models import resolve_model
    from .llamacpp import LlamaCppBackend

    path = resolve_model(model)
    return LlamaCppBackend(path, name=model, **options)
