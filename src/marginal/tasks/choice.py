"""Multiple-choice answers (GPQA and ``--grader choice``): the option letter.

Reads, by priority: ``\\boxed{B}``; "answer is (B)" / "Answer: B) ..." /
"correct option is **B**" (the last one); a final line that is only a letter
(``(B)``, ``**B**``, ``B.``); then the last standalone emphasized or
parenthesized letter (``**B**``, ``(B)``). A bare capital in prose ("A good
start") is never read as an answer.

Left out: matching the text of an option when no letter is given.
"""

from __future__ import annotations

import re

from .base import Extraction


def _patterns(letters: str) -> list[re.Pattern[str]]:
    L = f"[{letters}]"
    return [
        re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\s*\(?({L})\)?\s*\}}?\s*\}}"),
        re.compile(
            rf"(?:answer|option|choice)\s*(?:is|would be|will be|should be|:|=)?\s*(?:option|choice)?\s*[:\-]?\s*"
            rf"[\*_`\[\(\s]*({L})(?![A-Za-z0-9])", re.IGNORECASE,
        ),
        re.compile(rf"(?m)^[\s\*_>#\-]*(?:\(|\[)?({L})(?:\)|\])?[\*_\.:\)]*\s*$"),
        re.compile(rf"(?m)^[\s\*_>#\-]*(?:\(({L})\)|({L})\))\s+\S"),
        re.compile(rf"\*\*\s*\(?({L})\)?\s*\*\*|\(({L})\)"),
    ]


_CACHE: dict[str, list[re.Pattern[str]]] = {}


def extract_letter(text: str, letters: str = "ABCD") -> Extraction:
    """The option letter a completion chooses, or why there is none."""
    pats = _CACHE.setdefault(letters, _patterns(letters))
    for i, pat in enumerate(pats):
        ms = list(pat.finditer(text))
        if i == 1:  # "answer ... X": the letter must be upper case (not "answer is a ...")
            ms = [m for m in ms if m.group(1).isupper()]
        if ms:
            m = ms[-1]
            letter = next(g for g in m.groups() if g)
            return Extraction(letter.upper())
    return Extraction(None, "no_answer")


def grade_letter(answer: str, reference: str | None) -> bool | None:
    if reference is None:
        return None
    return answer.strip().upper() == reference.strip().strip("()").upper()
