"""Free-text answers (``--grader exact``), compared after normalization (case,
spaces, markdown emphasis, quotes, a final period).

Extraction is the `TEXT` chain: ``answer-line`` (the text after the last
``Answer:``), ``boxed`` (the last ``\\boxed{}``), ``answer-is`` (after the last
"the answer is"), else ``last-line`` (the last non-empty line). An answer that
normalizes to nothing is ``no_answer``.

Left out: fuzzy matching, aliases and synonyms.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .base import Extraction
from .chain import NO_ANSWER, Chain, Step
from .numeric import last_boxed

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


def _last_group(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    """A step: group 1 of the last match of ``pattern``."""

    def find(text: str) -> str | None:
        ms = list(pattern.finditer(text))
        return ms[-1].group(1) if ms else None

    return find


def _last_line(text: str) -> str | None:
    """The last non-empty line, without a leading "Answer:"."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    return re.sub(r"^[\s*_#>]*(?:final answer|answer)\s*[:：]?", "", lines[-1], flags=re.IGNORECASE)


def _normalized(candidate: str) -> str | None:
    return normalize(candidate) or None


def _no_answer(candidate: str) -> str:
    return NO_ANSWER


TEXT: Chain[str] = Chain(
    "exact",
    (
        Step("answer-line", _last_group(_ANSWER_RE)),
        Step("boxed", last_boxed),
        Step("answer-is", _last_group(_IS_RE)),
        Step("last-line", _last_line),
    ),
    canonicalize=_normalized,
    fail=_no_answer,
)


def extract_text(text: str) -> Extraction:
    """The normalized final answer of a completion, or ``no_answer`` (the `TEXT` chain)."""
    return TEXT(text)


def grade_text(answer: str, reference: str | None) -> bool | None:
    if reference is None:
        return None
    return normalize(answer) == normalize(reference)
