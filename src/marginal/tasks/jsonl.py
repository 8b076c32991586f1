"""User data: ``jsonl:PATH``, one JSON object per line.

``--question-field`` (default ``question``) is the text the prior's template
receives; ``--answer-field`` (default ``answer``) the reference, optional per
row (rows without one grade as None). ``--grader`` picks how completions become
canonical answers, from the `marginal.tasks.graders.GRADERS` table:
``numeric`` (default; ``#### N``, ``\\boxed{}``, "the answer is N", the last
number), ``exact`` (normalized text), ``math`` (math-verify), ``choice`` (an
option letter A-J; the question must list the options) or ``code`` (rows also
need ``entry_point`` and ``test``, HumanEval style; optional
``canonical_solution``, which is then the stored reference, else the test
is). Problem ids are the row's ``id`` field when present, else
``<file stem>/<row index>``.

Left out: CSV/Parquet input, nested field paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MarginalError
from ..types import Prior, Problem
from .base import Extraction
from .data import read_jsonl
from .graders import GRADERS as _TABLE

GRADERS = _TABLE.names()
"""The grader names, in table order (kept for callers of the old tuple; the table is `marginal.tasks.GRADERS`)."""


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


class GraderTask:
    """A task made of a grader of `GRADERS` alone: its extraction, grading and bank; no problems
    (what `marginal serve` uses for ``"task": "numeric"`` and the like, and the base of `JsonlTask`)."""

    def __init__(self, grader: str) -> None:
        spec = _TABLE.get(grader)
        self.name = grader
        self.grader = grader
        self._grader = spec.make()
        self._bank = spec.bank

    def problems(self) -> list[Problem]:
        return []

    def bank(self) -> list[Prior]:
        return self._bank()

    def extract(self, text: str, problem: Problem) -> Extraction:
        return self._grader.extract(text, problem)

    def extract_batch(self, items: Sequence[tuple[str, Problem]]) -> list[Extraction]:
        return self._grader.extract_batch(items)

    def grade(self, answer: str, problem: Problem) -> bool | None:
        return self._grader.grade(answer, problem)


class JsonlTask(GraderTask):
    """A user JSONL dataset (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        question_field: str = "question",
        answer_field: str = "answer",
        grader: str | None = None,
    ) -> None:
        grader = grader or "numeric"
        super().__init__(grader)
        spec = _TABLE.get(grader)
        path = Path(path).expanduser()
        if not path.is_file():
            raise MarginalError(f"jsonl:{path}: no such file; expected a JSON Lines file with one problem per line")
        self.name = f"jsonl:{path}"
        self.path = path
        rows = read_jsonl(path)
        if not rows:
            raise MarginalError(f"{path}: no rows; expected one JSON object per line")
        self._problems: list[Problem] = []
        seen: set[str] = set()
        for i, r in enumerate(rows):
            where = f"{path}: row {i + 1}"
            if question_field not in r:
                raise MarginalError(
                    f"{where} has no field {question_field!r} (fields: {', '.join(map(str, r)) or 'none'}); "
                    "set --question-field"
                )
            q = r[question_field]
            if not isinstance(q, str) or not q.strip():
                raise MarginalError(f"{where}: field {question_field!r} must be a non-empty string, got {q!r}")
            a = r.get(answer_field)
            if a is not None and not isinstance(a, (str, int, float)):
                raise MarginalError(
                    f"{where}: field {answer_field!r} must be a string or number, got {type(a).__name__}"
                )
            pid = _scalar(r["id"]) if "id" in r and r["id"] is not None else f"{path.stem}/{i}"
            if pid in seen:
                raise MarginalError(f"{where}: duplicate id {pid!r}")
            seen.add(pid)
            ref, meta = spec.row(r, q, None if a is None else _scalar(a), where)
            self._problems.append(Problem(id=pid, question=q, answer=ref, meta=meta))

    def problems(self) -> list[Problem]:
        return list(self._problems)
