"""GPQA Diamond (198 graduate-level multiple-choice questions).

Rows are read in memory from the authors' password-protected zip (member
``dataset/gpqa_diamond.csv``); they are never written to disk in plain text:
problems carry ``meta["redact"] = True`` so the store leaves the question out,
and the reference is only the gold letter. The four options are shuffled
deterministically per (Record ID, seed) and the gold letter follows the
shuffle. Problem ids are ``gpqa/<Record ID>``.

Left out: the main/extended/experts splits, and the explanation column.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from ..errors import MarginalError
from ..types import Prior, Problem, derive_seed
from . import data as _data
from .banks import choice_bank
from .base import Extraction
from .choice import extract_letter, grade_letter

ZIP_MEMBER = "dataset/gpqa_diamond.csv"
ZIP_PASSWORD = b"deserted-untie-orchid"  # published in the authors' README
LETTERS = "ABCD"


def read_gpqa(path: Path) -> list[dict[str, str]]:
    """GPQA Diamond rows from the zip (in memory) or from a CSV file the user gives."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                raw = z.read(ZIP_MEMBER, pwd=ZIP_PASSWORD)
            return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except (KeyError, RuntimeError, zipfile.BadZipFile, OSError, UnicodeDecodeError, csv.Error) as e:
        raise MarginalError(
            f"{path}: cannot read GPQA Diamond ({type(e).__name__}); expected the authors' "
            f"gpqa_dataset.zip with {ZIP_MEMBER}"
        ) from None


def shuffled(row: dict[str, str], seed: int) -> tuple[str, str]:
    """(question with lettered options, gold letter) for one row under ``seed``."""
    options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    options = [o.strip() for o in options]
    rng = np.random.default_rng(derive_seed("gpqa-options", row["Record ID"], seed))
    order = rng.permutation(4)
    lines = [f"{LETTERS[i]}) {options[j]}" for i, j in enumerate(order)]
    gold = LETTERS[int(np.flatnonzero(order == 0)[0])]
    return row["Question"].strip() + "\n\n" + "\n".join(lines), gold


class GPQADiamond:
    """GPQA Diamond (see the module docstring)."""

    name = "gpqa-diamond"

    def __init__(self, data: str | Path | None = None, seed: int = 0) -> None:
        rows, self.source = _data.resolve(_data.GPQA, data, reader=read_gpqa)
        self.seed = seed
        if not rows:
            raise MarginalError(
                f"{self.source}: no GPQA rows; expected the authors' gpqa_dataset.zip with {ZIP_MEMBER}"
            )
        probs = []
        for i, r in enumerate(rows):
            try:
                q, gold = shuffled(r, seed)
                probs.append(Problem(id=f"gpqa/{r['Record ID']}", question=q, answer=gold, meta={"redact": True}))
            except KeyError as e:
                raise MarginalError(f"{self.source}: row {i + 1} lacks GPQA column {e}") from None
        self._problems = probs

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def bank(self) -> list[Prior]:
        return choice_bank()

    def extract(self, text: str, problem: Problem) -> Extraction:
        return extract_letter(text, LETTERS)

    def grade(self, answer: str, problem: Problem) -> bool | None:
        return grade_letter(answer, problem.answer)
