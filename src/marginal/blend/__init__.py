"""Token-level model blending (BlendIn): a base model generates and, where it
is unsure, a guide model's next-token distribution is mixed in with a
reliability weight; every completion carries intervention diagnostics.

- `spec`: `BlendConfig`, the named variants and the ``blend:`` model spec (no engine).
- `mix`: the mixing rule as pure numpy functions (candidates, alpha, mixing, sampler).
- `completion`: `BlendCompletion` and the names of its per-sample diagnostics.
- `engine`: the `NextTokenLogprobs` protocol and its llama.cpp implementation.
- `decode`: one group of sequences decoded step by step (admit, step, finish).
- `backend`: `BlendBackend` (a Backend) and the pair checks.

Importing this package loads no engine: `spec`, `mix` and `completion` are
imported at once, the engine-backed names (`BlendBackend`, `LlamaCppEngine`,
...) on first use. Left out: engines other than llama.cpp, and speculative
multi-token guide proposals (the guide is asked one token at a time).
"""

from __future__ import annotations

import importlib
from typing import Any

from .completion import DIAGNOSTICS, BlendCompletion
from .mix import Candidates, StringVocab, alpha_for, auto_alpha, mix, union_by_id, union_by_string
from .spec import (
    BLEND_VARIANTS,
    VARIANTS,
    BlendConfig,
    blend_variant,
    format_blend_spec,
    parse_blend_spec,
    variant_config,
)

_LAZY = {
    "BlendBackend": "backend",
    "BlendStats": "backend",
    "check_pair": "backend",
    "load_blend": "backend",
    "EngineStats": "engine",
    "LlamaCppEngine": "engine",
    "NextTokenLogprobs": "engine",
}


def __getattr__(name: str) -> Any:
    """The engine-backed names, imported on first use (see the module docstring)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BLEND_VARIANTS",
    "DIAGNOSTICS",
    "VARIANTS",
    "BlendBackend",
    "BlendCompletion",
    "BlendConfig",
    "BlendStats",
    "Candidates",
    "EngineStats",
    "LlamaCppEngine",
    "NextTokenLogprobs",
    "StringVocab",
    "alpha_for",
    "auto_alpha",
    "blend_variant",
    "check_pair",
    "format_blend_spec",
    "load_blend",
    "mix",
    "parse_blend_spec",
    "union_by_id",
    "union_by_string",
    "variant_config",
]
