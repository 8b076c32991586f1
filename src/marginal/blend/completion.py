"""`BlendCompletion`: a completion of a blended model, with its intervention
diagnostics, and `DIAGNOSTICS`, the names it stores with each sample
(``Sample.diagnostics``). No engine is imported here.

Left out: per-token traces (only per-completion aggregates are kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..types import Completion

DIAGNOSTICS = ("interventions", "intervention_rate", "mean_alpha", "topk_overlap", "retokenized")
"""The per-sample diagnostics of a blended model, by name (``Completion.diagnostics``)."""


@dataclass(frozen=True)
class BlendCompletion(Completion):
    """A completion with the blend's intervention diagnostics."""

    steps: int = 0
    """Tokens emitted (one per step)."""
    interventions: int = 0
    """Steps where the guide was consulted."""
    mean_alpha: float = float("nan")
    """Mean guide weight over interventions (nan without any)."""
    topk_overlap: float = float("nan")
    """Mean top-k overlap |top-k(p_B) and top-k(p_G)| / k over interventions (nan without any)."""
    retokenized: int = 0
    """Steps that re-tokenized the text for the base (different tokenizers only)."""

    @property
    def intervention_rate(self) -> float:
        return self.interventions / self.steps if self.steps else 0.0

    @property
    def diagnostics(self) -> Mapping[str, float | int | None]:
        """`DIAGNOSTICS` of this completion (nan where there was no intervention)."""
        return {name: getattr(self, name) for name in DIAGNOSTICS}
