"""Backends: the Backend protocol, the table of engines behind it, and the engine cache.

``load_backend(model, **options)`` picks the engine of a model spec by its
prefix in `ENGINES` (a `marginal.registry.Registry`, first match wins):

- ``http://host:port/v1#name`` (or https): any OpenAI-compatible server;
- ``blend:BASE+GUIDE[:gamma=..,alpha=..]``: two llama.cpp models blended
  token by token (see ``marginal.blend``);
- ``vllm:ID_OR_PATH``: vLLM (a hub id, a local folder, a ``.gguf`` file, a
  catalog name such as ``smollm2-135m`` or ``hf:repo/file.gguf``), prefix
  caching on; needs a device vLLM supports (a CUDA GPU, or a CPU/ROCm build);
- ``torch:ID_OR_PATH``: HF transformers (a hub id, a local folder, or a
  ``.gguf`` file), on CUDA when available;
- anything else (a catalog name, a ``.gguf`` path, ``hf:repo/file.gguf``):
  llama.cpp in process.

Options: each engine lists the options it takes (`EngineKind.options`). The
options of a run are shared by all its engines (a session or a CLI run passes
the same ones to every model its priors name, a Ray worker always passes
``n_threads``), so an option that another engine takes is dropped for an
engine that does not (``n_threads`` means nothing to a server), and an option
that no engine takes is a MarginalError naming it, the model and what its
engine takes. vLLM passes the options no engine names to ``vllm.LLM`` as
engine arguments.

`Engines` (``marginal.backends.cache``) keeps the engines a run loads, one per
(model spec, options). Left out: engine plug-ins through entry points (an
engine is added by registering it in `ENGINES`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import MarginalError, suggest
from ..registry import Registry
from .base import Backend
from .cache import Engines

__all__ = [
    "ENGINES",
    "Backend",
    "EngineKind",
    "Engines",
    "engine_kind",
    "engine_options",
    "load_backend",
    "slot_options",
]


@dataclass(frozen=True)
class EngineKind:
    """One engine of `ENGINES`: which model specs it serves and what it takes."""

    prefixes: tuple[str, ...]
    """Model-spec prefixes it serves; () for the default engine (llama.cpp)."""
    factory: Callable[..., Backend]
    """``factory(model_spec, **options)``: the loaded backend."""
    options: frozenset[str]
    """Options it takes."""
    extra: bool = False
    """It also takes the options no engine names (vLLM's engine arguments)."""


def _http(model: str, **options: Any) -> Backend:
    from .http import OpenAIBackend

    return OpenAIBackend.from_spec(model, **options)


def _blend(model: str, **options: Any) -> Backend:
    from ..blend.backend import load_blend

    return load_blend(model, **options)


def _vllm(model: str, **options: Any) -> Backend:
    from ..models import CATALOG, resolve_model
    from .vllm import VLLMBackend

    src = model.removeprefix("vllm:")
    if not src:
        raise MarginalError(f"model {model!r} names no model; expected vllm:HUB_ID, vllm:PATH or vllm:CATALOG_NAME")
    if src in CATALOG or src.startswith("hf:"):
        src = str(resolve_model(src))
    return VLLMBackend(src, name=options.pop("name", model), **options)


def _torch(model: str, **options: Any) -> Backend:
    from .hf import HFBackend

    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        device = "cpu"
    return HFBackend(
        model.removeprefix("torch:"), device=options.pop("device", device), name=options.pop("name", model), **options
    )


def _llama(model: str, **options: Any) -> Backend:
    from ..models import resolve_model
    from .llamacpp import LlamaCppBackend

    return LlamaCppBackend(resolve_model(model), name=options.pop("name", model), **options)


ENGINES: Registry[EngineKind] = Registry("engine")
ENGINES.add(
    "http",
    EngineKind(
        ("http://", "https://"),
        _http,
        frozenset({"api_key", "max_concurrency", "timeout", "retries", "use_n", "check", "name"}),
    ),
    "http://host:port/v1#name: any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama)",
)
ENGINES.add(
    "blend",
    EngineKind(("blend:",), _blend, frozenset({"n_ctx", "max_seqs", "n_threads"})),
    "blend:BASE+GUIDE[:gamma=G,alpha=A,variant=V]: two llama.cpp models blended token by token",
)
ENGINES.add(
    "vllm",
    EngineKind(
        ("vllm:",),
        _vllm,
        frozenset({"tokenizer", "seed", "max_model_len", "gpu_memory_utilization", "dtype", "name"}),
        extra=True,
    ),
    "vllm:ID_OR_PATH: vLLM on a GPU, prefix caching on",
)
ENGINES.add(
    "torch",
    EngineKind(("torch:",), _torch, frozenset({"device", "dtype", "gguf_file", "name"})),
    "torch:ID_OR_PATH: HF transformers on CPU or CUDA",
)
ENGINES.add(
    "llama.cpp",
    EngineKind(
        (),
        _llama,
        frozenset(
            {
                "n_ctx",
                "n_threads",
                "max_seqs",
                "n_batch",
                "prefix_cache",
                "kv_unified",
                "seq_len",
                "n_gpu_layers",
                "verbose",
                "name",
            }
        ),
    ),
    "a catalog name, a .gguf path or hf:owner/repo/file.gguf: llama.cpp in process",
)


def slot_options(
    slots: int, max_tokens: int, *, prompt_room: int = 1024, prefix_cache: int = 8, threads: int | None = None
) -> dict[str, Any]:
    """llama.cpp options for ``slots`` sequences decoded together, each in its own KV stream of
    ``max_tokens + prompt_room`` cells (rounded up to 256), plus one per ``prefix_cache`` kept prompt,
    and ``threads`` (the engine's default when None); other engines drop them. What `marginal run
    --slots` and the server pass. Streams, not one unified cache: in a unified cache every token's
    attention scans every used cell up to the highest one, live or not, of all sequences; a stream
    holds one sequence, and the engine keeps the batch's ids dense and in order, which llama.cpp
    decodes in one pass (bench/continuous.py, part "layout": 1.23x the unified cache's tok/s on a
    real continuous grid)."""
    if not isinstance(slots, int) or slots < 1:
        raise MarginalError(f"--slots must be a positive integer, got {slots!r}")
    seq = -(-(max_tokens + prompt_room) // 256) * 256
    opts: dict[str, Any] = {
        "max_seqs": slots,
        "prefix_cache": prefix_cache,
        "kv_unified": False,
        "n_ctx": (slots + prefix_cache) * seq,
    }
    if threads:
        opts["n_threads"] = threads
    return opts


def engine_kind(model: str) -> tuple[str, EngineKind]:
    """The name and entry of the engine that serves a model spec (the first whose prefix matches)."""
    default = None
    for entry in ENGINES:
        if not entry.value.prefixes:
            default = default or entry
        elif model.startswith(entry.value.prefixes):
            return entry.name, entry.value
    assert default is not None, "ENGINES has no default engine"
    return default.name, default.value


def engine_options(model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options the engine of ``model`` gets (see the module docstring)."""
    name, kind = engine_kind(model)
    known = set().union(*(e.value.options for e in ENGINES))
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in kind.options or (kind.extra and key not in known):
            out[key] = value
        elif key not in known:
            raise MarginalError(
                f"backend option {key!r} is not one the {name} engine of model {model!r} takes"
                f"{suggest(key, kind.options)}; expected one of: {', '.join(sorted(kind.options))}"
            )
    return out


def load_backend(model: str, **options: Any) -> Backend:
    """An engine for ``model``; ``options`` go to the engine's constructor (see the module docstring)."""
    _, kind = engine_kind(model)
    return kind.factory(model, **engine_options(model, options))
