"""User data: ``jsonl:PATH``, one JSON object per line.

``--question-field`` (default ``question``) is the text the prior's template
receives; ``--answer-field`` (default ``answer``) the reference, optional per
row (rows without one grade as None). ``--grader`` picks how completions become
canonical answers: ``numeric`` (default; ``#### N``, ``\\boxed{}``, "the
answer is N", the last number), ``exact`` (normalized text), ``math``
(math-verify), ``choice`` (an option letter A-J; the question must list the
options) or ``code`` (rows also need ``entry_point`` and ``test``, HumanEval
style; optional ``canonical_solution``, which is then the stored reference,
else the test is). Problem ids are the row's ``id`` field
when present, else ``<file stem>/<row index>``.

Left out: CSV/Parquet input, nested field paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MarginalError, unknown
from ..types import Prior, Problem
from .base import Extraction
from .data import read_jsonl

GRADERS = ("numeric", "exact", "math", "choice", "code")


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


class JsonlTask:
    """A user JSONL dataset (see the module docstring)."""

    def __init__(self, path: str | Path, *, question_field: str = "question", answer_field: str = "answer",
                 grader: str | None = None) -> None:
        grader = grader or "numeric"
        if grader not in GRADERS:
            raise unknown("grader", grader, GRADERS)
        path = Path(path).expanduser()
        if not path.is_file():
            raise MarginalError(f"jsonl:{path}: no such file; expected a JSON Lines file with one problem per line")
        self.name = f"jsonl:{path}"
        self.grader = grader
        self.path = path
        rows = read_jsonl(path)
        if not rows:
            raise MarginalError(f"{path}: no rows; expected one JSON object per line")
        self._problems: list[Problem] = []
        seen: set[str] = set()
        for i, r in enumerate(rows):
            where = f"{path}: row {i + 1}"
            if question_field not in r:
                raise MarginalError(f"{where} has no field {question_field!r} (fields: {', '.join(map(str, r)) or 'none'}); "
                                    "set --question-field")
            q = r[question_field]
            if not isinstance(q, str) or not q.strip():
                raise MarginalError(f"{where}: field {question_field!r} must be a non-empty string, got {q!r}")
            a = r.get(answer_field)
            if a is not None and not isinstance(a, (str, int, float)):
                raise MarginalError(f"{where}: field {answer_field!r} must be a string or number, got {type(a).__name__}")
            pid = _scalar(r["id"]) if "id" in r and r["id"] is not None else f"{path.stem}/{i}"
            if pid in seen:
                raise MarginalError(f"{where}: duplicate id {pid!r}")
            seen.add(pid)
            meta: dict[str, Any] = {}
            if grader == "code":
                for f in ("entry_point", "test"):
                    if not isinstance(r.get(f), str) or not r[f].strip():
                        raise MarginalError(f"{where}: --grader code needs a string field {f!r}")
                meta = {"entry_point": r["entry_point"], "test": r["test"], "prompt": q}
                if isinstance(r.get("canonical_solution"), str):
                    meta["canonical_solution"] = r["canonical_solution"]
            ref = None if a is None else _scalar(a)
            if grader == "code":  # the reference is the test (graded by running it): keep a readable copy
                ref = meta.get("canonical_solution") or meta["test"]
            self._problems.append(Problem(id=pid, question=q, answer=ref, meta=meta))
        self._code: Any = None
        if grader == "code":
            from .humaneval import CodeGrader

            self._code = CodeGrader()

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def bank(self) -> list[Prior]:
        from . import banks

        return {
            "numeric": banks.numeric_bank, "exact": banks.exact_bank, "math": banks.math_bank,
            "choice": banks.choice_bank, "code": banks.code_bank,
        }[self.grader]()

    def extract(self, text: str, problem: Problem) -> Extraction:
        g = self.grader
        if g == "numeric":
            from .numeric import extract_number

            return extract_number(text)
        if g == "exact":
            from .text import extract_text

            return extract_text(text)
        if g == "math":
            from .math import extract_math

            return extract_math(text)
        if g == "choice":
            from .choice import extract_letter

            return extract_letter(text, letters="ABCDEFGHIJ")
        return self._code.extract(text, problem)

    def extract_batch(self, items: Sequence[tuple[str, Problem]]) -> list[Extraction]:
        if self.grader == "code":
            return self._code.extract_batch(items)
        return [self.extract(t, p) for t, p in items]

    def grade(self, answer: str, problem: Problem) -> bool | None:
        g = self.grader
        if g == "code":
            return self._code.grade(answer, problem)
        if problem.answer is None:
            return None
        if g == "numeric":
            from .numeric import grade_number

            return grade_number(answer, problem.answer)
        if g == "exact":
            from .text import grade_text

            return grade_text(answer, problem.answer)
        if g == "math":
            from .math import grade_math

            return grade_math(answer, problem.answer)
        from .choice import grade_letter

        return grade_letter(answer, problem.answer)
