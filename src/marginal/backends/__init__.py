"""Backends: the Backend protocol and the engines behind it.

``load_backend(model)`` maps a model spec to an engine:

- ``http://host:port/v1#name`` (or https): any OpenAI-compatible server;
- ``torch:ID_OR_PATH``: HF transformers (a hub id, a local folder, or a
  ``.gguf`` file), on CUDA when available;
- ``vllm:ID_OR_PATH``: vLLM (a hub id, a local folder, a ``.gguf`` file, a
  catalog name such as ``smollm2-135m`` or ``hf:repo/file.gguf``), prefix
  caching on; needs a device vLLM supports (a CUDA GPU, or a CPU/ROCm build);
- ``blend:BASE+GUIDE[:gamma=..,alpha=..]``: two llama.cpp models blended
  token by token (see ``marginal.blend``);
- anything else (a catalog name, a ``.gguf`` path, ``hf:repo/file.gguf``):
  llama.cpp in process.

Left out: engine plug-ins (the prefixes above are fixed). Options meant for
another engine are dropped (llama.cpp's ``n_threads``/``n_ctx``/``max_seqs``
for the others).
"""

from __future__ import annotations

from ..errors import MarginalError
from .base import Backend

__all__ = ["Backend", "load_backend"]

_LLAMA_ONLY = ("n_threads", "n_ctx", "max_seqs")


def load_backend(model: str, **options) -> Backend:
    """An engine for ``model``; ``options`` go to the engine's constructor
    (llama.cpp's ``n_threads``/``n_ctx``/``max_seqs`` are dropped for the others)."""
    from .http import is_http_model

    if is_http_model(model):
        from .http import OpenAIBackend

        return OpenAIBackend.from_spec(model, **{k: v for k, v in options.items() if k not in _LLAMA_ONLY})
    if model.startswith("blend:"):
        from ..blend import load_blend

        return load_blend(model, **options)
    if model.startswith("vllm:"):
        from .vllm import VLLMBackend

        src = model.removeprefix("vllm:")
        if not src:
            raise MarginalError(f"model {model!r} names no model; expected vllm:HUB_ID, vllm:PATH or vllm:CATALOG_NAME")
        from ..models import CATALOG, resolve_model

        if src in CATALOG or src.startswith("hf:"):
            src = str(resolve_model(src))
        opts = {k: v for k, v in options.items() if k not in _LLAMA_ONLY}
        return VLLMBackend(src, name=opts.pop("name", model), **opts)
    if model.startswith("torch:"):
        from .hf import HFBackend

        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
        opts = {k: v for k, v in options.items() if k not in _LLAMA_ONLY}
        return HFBackend(model.removeprefix("torch:"), device=opts.pop("device", device), name=model, **opts)
    from ..models import resolve_model
    from .llamacpp import LlamaCppBackend

    return LlamaCppBackend(resolve_model(model), name=model, **options)
