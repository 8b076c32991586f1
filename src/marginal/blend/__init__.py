"""Token-level model blending (BlendIn): a base model generates and, where it
is unsure, a guide model's next-token distribution is mixed in with a
reliability weight; every completion carries intervention diagnostics.

- `mix`: the mixing rule as pure numpy functions (candidates, alpha, mixing, sampler).
- `engine`: the `NextTokenLogprobs` protocol and its llama.cpp implementation.
- `backend`: `BlendBackend` (a Backend), its variants and diagnostics.

Left out: engines other than llama.cpp, and speculative multi-token guide
proposals (the guide is asked one token at a time).
"""

from .backend import (
    VARIANTS,
    BlendBackend,
    BlendCompletion,
    BlendConfig,
    BlendStats,
    blend_variant,
    check_pair,
    format_blend_spec,
    load_blend,
    parse_blend_spec,
    variant_config,
)
from .engine import EngineStats, LlamaCppEngine, NextTokenLogprobs
from .mix import Candidates, StringVocab, alpha_for, auto_alpha, mix, union_by_id, union_by_string

__all__ = [
    "VARIANTS", "BlendBackend", "BlendCompletion", "BlendConfig", "BlendStats", "Candidates", "EngineStats",
    "blend_variant", "format_blend_spec",
    "LlamaCppEngine", "NextTokenLogprobs", "StringVocab", "alpha_for", "auto_alpha", "check_pair", "load_blend", "mix", "parse_blend_spec",
    "union_by_id", "union_by_string", "variant_config",
]
