"""Free-text answers (``--grader exact``): the text after the last ``Answer:``
(or ``\\boxed{}``, or "the answer is"), else the last non-empty line, compared
after normalization (case, spaces, markdown emphasis, quotes, a final period).

Left out: fuzzy matching, aliases and synonyms.
"""

from __future__ import annotations

import re

from .base import Extraction
from .numeric import boxed_contents

_ANSWER_RE = re.compile(r"(?:^|\n)[ \t*_#>]*(?:final answer|answer)\s*[:：]\s*(.+)", re.IGNORECASE)
_IS_RE = re.compile(r"the (?:final )?answer is\s*[:：]?\s*(.+)", re.IGNORECASE)


def normalize(s: str) -> str:
    """Case-folded text without markdown emphasis, surrounding quotes/brackets, a final period or extra spaces."""
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.replace("**", "").replace("__", "").replace("`", "")
    s = " ".join(s.split()).strip()
    for _ in range(3):
        s = s.strip().rstrip(".!;,").strip()
        if len(s) >= 2 and s[0] + s[-1] in ('""', "''", "“”", "()", "[]", "$$", "**"):
            s = s[1:-1]
    return s.casefold()


def extract_text(text: str) -> Extraction:
    m = list(_ANSWER_RE.finditer(text))
    cand: str | None = None
    if m:
        cand = m[-1].group(1)
    elif boxed_contents(text):
        cand = boxed_contents(text)[-1]
    elif list(_IS_RE.finditer(text)):
        cand = list(_IS_RE.finditer(text))[-1].group(1)
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        cand = re.sub(r"^[\s*_#>]*(?:final answer|answer)\s*[:：]?", "", lines[-1], flags=re.IGNORECASE) if lines else None
    if cand is None:
        return Extraction(None, "no_answer")
    out = normalize(cand)
    return Extraction(out) if out else Extraction(None, "no_answer")


def grade_text(answer: str, reference: str | None) -> bool | None:
    if reference is None:
        return None
    return normalize(answer) == normalize(reference)
