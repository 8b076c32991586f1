"""Answer extraction as a named chain of pure steps (in the spirit of lm-eval's filters).

A `Step` looks for an answer candidate in a completion and either finds one
or passes. A `Chain` tries its steps in order; the first step that finds a
candidate fires, and the chain's ``canonicalize`` turns that candidate into
the canonical answer string the vote counts. When no step fires the
extraction fails with ``no_answer``; when the firing step's candidate does
not canonicalize, it fails with the chain's ``fail`` message (by default
``unparseable: '<candidate>'``). Either way the `Extraction` names the step
that fired (``step``), so a test or an analysis can ask which rule read an
answer::

    NUMBERS = Chain("numeric", (Step("boxed", last_boxed), Step("last-number", last_number)),
                    canonicalize=canonical_number)
    NUMBERS("so \\\\boxed{18}")         # Extraction(answer='18', error=None, step='boxed')

A candidate may be any value (the numeric chain passes parsed fractions);
``canonicalize`` returns None when it cannot make an answer of one.

Left out: steps that transform the text for later steps (lm-eval's
"map" filters); a chain here selects, it does not rewrite. Code answers
(HumanEval) use a chain to find the program and canonicalize it in batch in
the sandbox, outside `Chain.__call__`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .base import Extraction

C = TypeVar("C")

NO_ANSWER = "no_answer"


def unparseable(candidate: object) -> str:
    """The default failure of a candidate that does not canonicalize: ``unparseable: '<first 60 chars>'``."""
    return f"unparseable: {str(candidate)[:60]!r}"


@dataclass(frozen=True)
class Step(Generic[C]):
    """One named rule: ``find(text)`` is a candidate answer, or None when the rule does not apply."""

    name: str
    find: Callable[[str], C | None]


@dataclass(frozen=True)
class Chain(Generic[C]):
    """Steps tried in order; the first candidate found is canonicalized (see the module docstring)."""

    name: str
    steps: tuple[Step[C], ...]
    canonicalize: Callable[[C], str | None]
    fail: Callable[[C], str] = unparseable

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"chain {self.name!r} has repeated step names: {names}")

    def find(self, text: str) -> tuple[str, C] | None:
        """(name of the step that fired, its candidate), or None when no step fires."""
        for step in self.steps:
            found = step.find(text)
            if found is not None:
                return step.name, found
        return None

    def __call__(self, text: str) -> Extraction:
        hit = self.find(text)
        if hit is None:
            return Extraction(None, NO_ANSWER)
        step, candidate = hit
        answer = self.canonicalize(candidate)
        if answer:
            return Extraction(answer, step=step)
        return Extraction(None, self.fail(candidate), step=step)

    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)


__all__ = ["NO_ANSWER", "Chain", "Step", "unparseable"]
