"""GSM8K test (1319 grade-school word problems) with numeric answers.

Problem ids are ``gsm8k/<row index>``; the reference is the number after
``####`` in the reference solution, canonicalized. The bank's few-shot priors
read ``gsm8k_train_head64.jsonl`` through the same data resolution as the test
file. Left out: the train split beyond its first 64 rows.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MarginalError
from ..types import Prior, Problem
from . import data as _data
from .banks import numeric_bank
from .base import Extraction
from .numeric import canonical, extract_number, grade_number, to_fraction


def reference_number(solution: str) -> str:
    """The canonical number after ``####`` in a GSM8K reference solution."""
    _, sep, tail = solution.rpartition("####")
    v = to_fraction(tail.strip()) if sep else None
    if v is None:
        raise ValueError(f"no '#### N' in GSM8K solution {solution[-60:]!r}")
    return canonical(v)


class GSM8K:
    """The GSM8K task (see the module docstring)."""

    name = "gsm8k"

    def __init__(self, data: str | Path | None = None) -> None:
        self._data = data
        rows, self.source = _data.resolve(_data.GSM8K, data)
        probs = []
        for i, r in enumerate(rows):
            try:
                probs.append(
                    Problem(
                        id=f"gsm8k/{i}",
                        question=str(r["question"]),
                        answer=reference_number(str(r["answer"])),
                        meta={"solution": r["answer"]},
                    )
                )
            except (KeyError, ValueError) as e:
                raise MarginalError(
                    f"{self.source}: row {i + 1} is not a GSM8K row ({e}); "
                    "expected fields question, answer with '#### N'"
                ) from None
        self._problems = probs
        self._bank: list[Prior] | None = None

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def bank(self) -> list[Prior]:
        if self._bank is None:
            hint = self._data
            if hint is not None and Path(hint).is_file():
                hint = Path(hint).parent
            rows, _ = _data.resolve(_data.GSM8K_TRAIN, hint)
            pool = [(str(r["question"]), str(r["answer"])) for r in rows]
            self._bank = numeric_bank(pool)
        return list(self._bank)

    def extract(self, text: str, problem: Problem) -> Extraction:
        return extract_number(text)

    def grade(self, answer: str, problem: Problem) -> bool | None:
        return grade_number(answer, problem.answer)
