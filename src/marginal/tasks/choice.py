"""Multiple-choice answers (GPQA and ``--grader choice``): the option letter.

Extraction is the `choice_chain` of the options' letters; its steps, by
priority: ``boxed`` (``\\boxed{B}``); ``answer-is`` ("answer is (B)" /
"Answer: B) ..." / "correct option is **B**", the last one); ``letter-line``
(the last line that is only a letter: ``(B)``, ``**B**``, ``B.``);
``option-line`` (the last line that starts with ``(B) ...`` or ``B) ...``);
then ``emphasized`` (the last standalone emphasized or parenthesized letter:
``**B**``, ``(B)``). A bare capital in prose ("A good start") is never read
as an answer.

Left out: matching the text of an option when no letter is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from .base import Extraction
from .chain import Chain, Step


def _last_letter(pattern: re.Pattern[str], upper_only: bool = False) -> Callable[[str], str | None]:
    """A step: the letter of the last match of ``pattern`` (its first non-empty group)."""

    def find(text: str) -> str | None:
        ms = list(pattern.finditer(text))
        if upper_only:  # "answer ... X": the letter must be upper case (not "answer is a ...")
            ms = [m for m in ms if m.group(1).isupper()]
        return next(g for g in ms[-1].groups() if g) if ms else None

    return find


@lru_cache(maxsize=32)
def choice_chain(letters: str = "ABCD") -> Chain[str]:
    """The extraction chain for options ``letters`` (see the module docstring for its steps)."""
    L = f"[{letters}]"
    steps = (
        ("boxed", re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\s*\(?({L})\)?\s*\}}?\s*\}}"), False),
        (
            "answer-is",
            re.compile(
                rf"(?:answer|option|choice)\s*(?:is|would be|will be|should be|:|=)?\s*(?:option|choice)?\s*[:\-]?\s*"
                rf"[\*_`\[\(\s]*({L})(?![A-Za-z0-9])",
                re.IGNORECASE,
            ),
            True,
        ),
        ("letter-line", re.compile(rf"(?m)^[\s\*_>#\-]*(?:\(|\[)?({L})(?:\)|\])?[\*_\.:\)]*\s*$"), False),
        ("option-line", re.compile(rf"(?m)^[\s\*_>#\-]*(?:\(({L})\)|({L})\))\s+\S"), False),
        ("emphasized", re.compile(rf"\*\*\s*\(?({L})\)?\s*\*\*|\(({L})\)"), False),
    )
    return Chain(f"choice:{letters}", tuple(Step(n, _last_letter(p, u)) for n, p, u in steps), canonicalize=str.upper)


def extract_letter(text: str, letters: str = "ABCD") -> Extraction:
    """The option letter a completion chooses, or why there is none (the `choice_chain`)."""
    return choice_chain(letters)(text)


def grade_letter(answer: str, reference: str | None) -> bool | None:
    if reference is None:
        return None
    return answer.strip().upper() == reference.strip().strip("()").upper()
