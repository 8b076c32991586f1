"""The Backend protocol: one batched call, n samples per prompt, outputs in
input order.

Left out: streaming, and per-prompt sampling settings (one SampleSpec per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..types import Completion, Prompt, SampleSpec


@runtime_checkable
class Backend(Protocol):
    """A text generator.

    ``generate(prompts, spec)`` returns, for each prompt in order, ``spec.n``
    completions. Completion ``j`` of a prompt samples with seed
    ``spec.sequence_seed(prompt_key(prompt), j)``, so the same call (prompts,
    spec, engine settings) gives the same completions. Engines whose kernels
    are not batch-invariant (llama.cpp on CPU, most GPU kernels) may give a
    prompt other tokens when it is batched with other prompts: same seed, not
    always the same text. A completion that fails has ``finish_reason ==
    "error"`` and ``error`` set; it is never dropped or replaced.
    """

    name: str
    """Stable model identity stored with each run."""

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]: ...

    def close(self) -> None: ...
