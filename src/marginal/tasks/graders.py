"""The graders of user data (``jsonl:PATH --grader NAME``): one `Registry` table.

A grader is what a user JSONL task needs from an answer family: how a
completion becomes a canonical answer (`AnswerGrader.extract`, an extraction
chain), whether that answer is right (`AnswerGrader.grade`), the family's bank
of priors, and what a row must carry besides the question and the answer
(``code`` rows also need ``entry_point`` and ``test``)::

    GRADERS.names()          # ('numeric', 'exact', 'math', 'choice', 'code')
    GRADERS.get("numerc")    # MarginalError: unknown grader 'numerc' (did you mean 'numeric'?); ...

Left out: graders from plug-ins (entries are registered here, on import).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import MarginalError
from ..registry import Registry
from ..types import Prior, Problem
from . import banks
from .base import Extraction
from .choice import choice_chain, grade_letter
from .math import MATH, grade_math
from .numeric import NUMERIC, grade_number
from .text import TEXT, grade_text


class AnswerGrader(Protocol):
    """Reads and grades the answers of one task's completions."""

    def extract(self, text: str, problem: Problem) -> Extraction: ...

    def extract_batch(self, items: Sequence[tuple[str, Problem]]) -> list[Extraction]: ...

    def grade(self, answer: str, problem: Problem) -> bool | None: ...


@dataclass(frozen=True)
class ChainGrader:
    """A stateless grader: an extraction chain reads the answer, ``compare(answer, reference)`` grades it."""

    chain: Callable[[str], Extraction]
    compare: Callable[[str, str | None], bool | None]

    def extract(self, text: str, problem: Problem) -> Extraction:
        return self.chain(text)

    def extract_batch(self, items: Sequence[tuple[str, Problem]]) -> list[Extraction]:
        return [self.chain(text) for text, _ in items]

    def grade(self, answer: str, problem: Problem) -> bool | None:
        return self.compare(answer, problem.answer)


RowReader = Callable[[Mapping[str, Any], str, str | None, str], tuple[str | None, dict[str, Any]]]
"""(row, question, reference, where) -> (stored reference, problem meta); raises MarginalError on a bad row."""


def plain_row(
    row: Mapping[str, Any], question: str, reference: str | None, where: str
) -> tuple[str | None, dict[str, Any]]:
    """A row needs nothing besides its question; the reference is the answer field."""
    return reference, {}


def code_row(
    row: Mapping[str, Any], question: str, reference: str | None, where: str
) -> tuple[str | None, dict[str, Any]]:
    """A HumanEval-style row: ``entry_point`` and ``test`` are required; the stored reference is
    ``canonical_solution`` when given, else the test (a readable copy: code is graded by running it)."""
    for f in ("entry_point", "test"):
        if not isinstance(row.get(f), str) or not row[f].strip():
            raise MarginalError(f"{where}: --grader code needs a string field {f!r}")
    meta: dict[str, Any] = {"entry_point": row["entry_point"], "test": row["test"], "prompt": question}
    if isinstance(row.get("canonical_solution"), str):
        meta["canonical_solution"] = row["canonical_solution"]
    return meta.get("canonical_solution") or meta["test"], meta


@dataclass(frozen=True)
class GraderSpec:
    """A registered grader: ``make()`` builds a task's `AnswerGrader`; ``bank()`` its priors."""

    make: Callable[[], AnswerGrader]
    bank: Callable[[], list[Prior]]
    row: RowReader = plain_row


def _code_grader() -> AnswerGrader:
    from .humaneval import CodeGrader  # the sandbox is imported only when code is graded

    return CodeGrader()


CHOICE_LETTERS = "ABCDEFGHIJ"
"""The option letters ``--grader choice`` reads."""

GRADERS: Registry[GraderSpec] = Registry("grader")
GRADERS.add(
    "numeric",
    GraderSpec(lambda: ChainGrader(NUMERIC, grade_number), banks.numeric_bank),
    "a number: '#### N', \\boxed{N}, 'the answer is N' or the last number; exact rational equality",
)
GRADERS.add(
    "exact",
    GraderSpec(lambda: ChainGrader(TEXT, grade_text), banks.exact_bank),
    "free text after 'Answer:'; equal after normalizing case, spaces, emphasis and quotes",
)
GRADERS.add(
    "math",
    GraderSpec(lambda: ChainGrader(MATH, grade_math), banks.math_bank),
    "a LaTeX answer in \\boxed{}; equivalence by math-verify",
)
GRADERS.add(
    "choice",
    GraderSpec(lambda: ChainGrader(choice_chain(CHOICE_LETTERS), grade_letter), banks.choice_bank),
    "an option letter A-J (the question lists the options)",
)
GRADERS.add(
    "code",
    GraderSpec(_code_grader, banks.code_bank, code_row),
    "a Python function run in the sandbox; rows need entry_point and test (HumanEval style)",
)


__all__ = ["GRADERS", "AnswerGrader", "ChainGrader", "GraderSpec", "code_row", "plain_row"]
