"""Blend settings and model specs, without any engine: `BlendConfig`, the
named variants (`BLEND_VARIANTS`, a `marginal.registry.Registry`), and the
``blend:BASE+GUIDE[:key=value,...]`` model spec (`parse_blend_spec`,
`format_blend_spec`, `blend_variant`).

Analyses read stored blend runs through this module alone, so reading a
spec string never loads llama.cpp. Left out: the mixing itself (`mix`) and
the engines (`engine`, `backend`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import MarginalError
from ..registry import Registry

Combine = Literal["linear", "geometric"]
Alpha = float | Literal["auto"]
Match = Literal["auto", "id", "string"]


@dataclass(frozen=True)
class BlendConfig:
    """How a blend mixes (one variant)."""

    gamma: float = 0.4
    """Intervene when the base's top probability is below gamma (0: never; > 1: always)."""
    alpha: Alpha = "auto"
    """The guide's weight: 'auto' (BlendIn's reliability weight) or a fixed value in [0, 1]."""
    top_k: int = 100
    """Mix over the union of both models' top-k tokens."""
    combine: Combine = "linear"
    """'linear' (p = alpha p_G + (1 - alpha) p_B) or 'geometric' (log-linear)."""
    solo: Literal["base", "guide"] | None = None
    """Generate with one model alone (the 'base' and 'guide' variants)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma >= 0):
            raise MarginalError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if self.alpha != "auto":
            if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
                raise MarginalError(f"alpha must be 'auto' or a number in [0, 1], got {self.alpha!r}")
            object.__setattr__(self, "alpha", float(self.alpha))
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise MarginalError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if self.combine not in ("linear", "geometric"):
            raise MarginalError(f"combine must be 'linear' or 'geometric', got {self.combine!r}")
        if self.solo not in (None, "base", "guide"):
            raise MarginalError(f"solo must be None, 'base' or 'guide', got {self.solo!r}")


MakeConfig = Callable[[float, Alpha, int], BlendConfig]
"""``make(gamma, alpha, top_k)``: a variant's config, with the settings it does not fix."""

BLEND_VARIANTS: Registry[MakeConfig] = Registry("blend variant")
BLEND_VARIANTS.add("blend", lambda g, a, k: BlendConfig(g, a, k), "the method: BlendIn's mixing at interventions")
BLEND_VARIANTS.add("base", lambda g, a, k: BlendConfig(g, a, k, solo="base"), "the base model alone")
BLEND_VARIANTS.add("guide", lambda g, a, k: BlendConfig(g, a, k, solo="guide"), "the guide model alone")
BLEND_VARIANTS.add(
    "nudge",
    lambda g, a, k: BlendConfig(g, 1.0, k),
    "hard switch: the guide's token replaces the base's at interventions (alpha = 1)",
)
BLEND_VARIANTS.add("always", lambda g, a, k: BlendConfig(1.0, a, k), "always blend (gamma = 1)")
BLEND_VARIANTS.add("geometric", lambda g, a, k: BlendConfig(g, a, k, "geometric"), "log-linear mixing")


def _fixed_alpha(f: float) -> MakeConfig:
    return lambda g, a, k: BlendConfig(g, f, k)


for _fixed in (0.25, 0.5, 0.75):
    BLEND_VARIANTS.add(f"alpha{_fixed:g}", _fixed_alpha(_fixed), f"fixed alpha {_fixed:g}")
del _fixed

VARIANTS = BLEND_VARIANTS.names()
"""The method and what it is compared against, in order."""


def variant_config(name: str, *, gamma: float = 0.4, alpha: Alpha = "auto", top_k: int = 100) -> BlendConfig:
    """The config of a named variant (`BLEND_VARIANTS`).

    ``gamma``/``alpha`` apply where the variant does not fix them.
    """
    return BLEND_VARIANTS.get(name)(gamma, alpha, top_k)


_SPEC_FORM = "expected 'blend:BASE+GUIDE[:gamma=G,alpha=A,top_k=K,variant=V,match=M]'"


def _split_blend_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """(base, guide, options) of ``blend:BASE+GUIDE[:key=value,...]``, keys checked."""
    if not spec.startswith("blend:"):
        raise MarginalError(f"blend model {spec!r}: {_SPEC_FORM}")
    body = spec[len("blend:") :]
    models, _, opts = body.partition(":")
    base, plus, guide = models.partition("+")
    if not (base and plus and guide):
        raise MarginalError(f"blend model {spec!r}: {_SPEC_FORM}")
    kv: dict[str, str] = {}
    for part in filter(None, opts.split(",")):
        k, eq, v = part.partition("=")
        if not eq or k not in ("variant", "gamma", "alpha", "top_k", "match"):
            raise MarginalError(f"blend model {spec!r}: bad option {part!r}; {_SPEC_FORM}")
        kv[k] = v
    return base, guide, kv


def parse_blend_spec(spec: str) -> tuple[str, str, BlendConfig, Match]:
    """(base, guide, config, match) of ``blend:BASE+GUIDE[:key=value,...]``.

    Keys: variant (default blend), gamma, alpha (auto or a number), top_k,
    match (auto|id|string); e.g. ``blend:qwen2.5-coder-1.5b+qwen2.5-coder-0.5b:gamma=0.3,alpha=auto``.
    """
    base, guide, kv = _split_blend_spec(spec)
    try:
        gamma = float(kv.get("gamma", 0.4))
        alpha: Alpha = "auto" if kv.get("alpha", "auto") == "auto" else float(kv["alpha"])
        top_k = int(kv.get("top_k", 100))
    except ValueError:
        raise MarginalError(f"blend model {spec!r}: gamma, alpha and top_k must be numbers; {_SPEC_FORM}") from None
    match = kv.get("match", "auto")
    if match not in ("auto", "id", "string"):
        raise MarginalError(f"blend model {spec!r}: match must be auto, id or string, got {match!r}")
    return base, guide, variant_config(blend_variant(spec), gamma=gamma, alpha=alpha, top_k=top_k), match  # type: ignore[return-value]


def blend_variant(spec: str) -> str:
    """The variant named by a ``blend:`` spec (default blend)."""
    return _split_blend_spec(spec)[2].get("variant", "blend")


def format_blend_spec(base: str, guide: str, variant: str, config: BlendConfig, match: str) -> str:
    """The canonical ``blend:`` spec of a variant (the inverse of `parse_blend_spec`); settings a
    solo variant ignores are left at their defaults, so a gamma sweep does not regenerate them."""
    gamma, alpha = (0.4, "auto") if config.solo else (config.gamma, config.alpha)
    a = alpha if alpha == "auto" else format(alpha, "g")
    return f"blend:{base}+{guide}:variant={variant},gamma={gamma:g},alpha={a},top_k={config.top_k},match={match}"
