"""The Task protocol: where problems come from, how a prior renders a prompt,
and how a completion becomes a canonical answer and a grade.

Extraction is a named chain of pure steps (lm-eval "filters", see
``chain.py``): find the final answer text, then canonicalize it, so equal
answers vote together; the `Extraction` names the step that fired.
Left out: dataset downloads (see ``data.py``) and code execution (see
``sandbox.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..types import Prior, Problem


@dataclass(frozen=True, slots=True)
class Extraction:
    """A canonical answer, or why none could be read.

    ``step`` names the extraction step that fired (``"boxed"``, ``"last-number"``, ...;
    None when none did or the task does not say). It is provenance, not part of the
    value: two extractions with the same answer and error are equal whatever the step.
    """

    answer: str | None
    error: str | None = None
    step: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.answer is None) == (self.error is None):
            raise ValueError("Extraction needs exactly one of answer and error")


@runtime_checkable
class Task(Protocol):
    name: str
    """Registry name, stored with each run (e.g. 'gsm8k', 'jsonl:data.jsonl')."""

    def problems(self) -> list[Problem]:
        """All problems in a fixed order."""
        ...

    def bank(self) -> list[Prior]:
        """Built-in priors in a fixed order; the plain default prompt first."""
        ...

    def extract(self, text: str, problem: Problem) -> Extraction:
        """The canonical answer of a completion (what the vote counts)."""
        ...

    def grade(self, answer: str, problem: Problem) -> bool | None:
        """Whether a canonical answer is right; None when the problem has no reference."""
        ...


def extract_all(task: Task, items: Sequence[tuple[str, Problem]]) -> list[Extraction]:
    """Extractions of many (completion text, problem) pairs, in input order.

    Uses ``task.extract_batch(items)`` when the task has one (HumanEval runs its
    sandboxes in a bounded worker pool), else calls ``task.extract`` per item.
    """
    batch = getattr(task, "extract_batch", None)
    if callable(batch):
        out = list(batch(items))
        if len(out) != len(items):
            raise RuntimeError(f"{task.name}.extract_batch returned {len(out)} extractions for {len(items)} items")
        return out
    return [task.extract(text, problem) for text, problem in items]
