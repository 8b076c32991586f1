"""Numeric answers (GSM8K and ``--grader numeric``): find the final number in a
completion and write it in one canonical form, so equal numbers vote together.

Extraction looks, in order, for ``#### N``, the last ``\\boxed{N}``, the last
"answer is N" / "Answer: N", then the last number in the text. Canonical form:
an exact rational written as an integer (``"18"``), a terminating decimal
(``"2.5"``) or ``p/q``; commas, ``$``, units, ``%`` and trailing ``.0`` go away.

Left out: number words ("eighteen"), scientific notation beyond ``1e3``, and
mixed numbers ("2 1/2" reads as 2 then 1/2 - the last number wins).
"""

from __future__ import annotations

import re
from fractions import Fraction

from .base import Extraction

_NUM = r"[-−]?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-−]?\.\d+"
_NUM_RE = re.compile(rf"(?<![\w.])(?:{_NUM})(?:\s*/\s*(?:\d+(?:\.\d+)?))?")
_HASH_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|was|would be|will be|:|=)\s*[:=]?\s*([^\n]*)", re.IGNORECASE
)
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order (balanced braces)."""
    out: list[str] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end(): i - 1])
    return out


def to_fraction(s: str) -> Fraction | None:
    """The exact value of one number written as text (``"$1,234.50"``, ``"3/4"``, ``"-.5"``), or None."""
    s = s.strip().replace("−", "-").replace("$", "").replace("\\", "").replace(" ", "")
    s = s.rstrip(".")
    if not s:
        return None
    if "/" in s:
        a, _, b = s.partition("/")
        fa, fb = to_fraction(a), to_fraction(b)
        if fa is None or fb is None or fb == 0:
            return None
        return fa / fb
    if re.fullmatch(r"[-+]?(\d{1,3}(,\d{3})+|\d*)(\.\d+)?([eE][-+]?\d+)?", s) and re.search(r"\d", s):
        try:
            return Fraction(s.replace(",", ""))
        except (ValueError, ZeroDivisionError):
            return None
    return None


def canonical(value: Fraction) -> str:
    """``18``, ``2.5``, ``-0.125`` or ``1/3`` (exact; no float rounding)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:  # terminating decimal
        sign = "-" if value < 0 else ""
        v = abs(value)
        digits = 0
        while (v * 10**digits).denominator != 1:
            digits += 1
        whole = v.numerator * 10**digits // v.denominator
        s = str(whole).rjust(digits + 1, "0")
        return f"{sign}{s[:-digits]}.{s[-digits:]}"
    return f"{value.numerator}/{value.denominator}"


def _numbers(text: str) -> list[str]:
    text = _FRAC_RE.sub(r"\1/\2", text)
    return [m.group(0) for m in _NUM_RE.finditer(text)]


def _last_number(text: str) -> Fraction | None | str:
    """The last number's value; the raw text when it does not parse; None when there is none."""
    nums = _numbers(text.replace("−", "-"))
    if not nums:
        return None
    v = to_fraction(nums[-1])
    return v if v is not None else nums[-1]


def _first_number(text: str) -> Fraction | None | str:
    nums = _numbers(text.replace("−", "-"))
    if not nums:
        return None
    v = to_fraction(nums[0])
    return v if v is not None else nums[0]


def extract_number(text: str) -> Extraction:
    """The canonical final number of a completion, or why there is none."""
    # "#### N": the GSM8K convention; take the last marker that has a number after it.
    for m in reversed(list(_HASH_RE.finditer(text))):
        v = _first_number(m.group(1))
        if isinstance(v, Fraction):
            return Extraction(canonical(v))
    boxes = boxed_contents(text)
    if boxes:  # the last box is the model's stated answer: a box without a number is unparseable
        v = _last_number(boxes[-1].replace("\\!", "").replace("{,}", ","))
        if isinstance(v, Fraction):
            return Extraction(canonical(v))
        return Extraction(None, f"unparseable: {boxes[-1][:60]!r}")
    for m in reversed(list(_ANSWER_RE.finditer(text))):
        v = _first_number(m.group(1))
        if isinstance(v, Fraction):
            return Extraction(canonical(v))
    v = _last_number(text)
    if isinstance(v, Fraction):
        return Extraction(canonical(v))
    if isinstance(v, str):
        return Extraction(None, f"unparseable: {v[:60]!r}")
    return Extraction(None, "no_answer")


def grade_number(answer: str, reference: str | None) -> bool | None:
    """Whether two numbers are equal (exactly, after canonicalization); None without a reference."""
    if reference is None:
        return None
    a = to_fraction(answer)
    r = to_fraction(reference)
    if r is None:
        ref = extract_number(reference)
        r = to_fraction(ref.answer) if ref.answer is not None else None
    if a is None or r is None:
        return False
    return a == r
