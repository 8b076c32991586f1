"""Numeric answers (GSM8K and ``--grader numeric``): find the final number in a
completion and write it in one canonical form, so equal numbers vote together.

Extraction is the `NUMERIC` chain; its steps, in order: ``hash`` (``#### N``),
``boxed`` (the last ``\\boxed{N}``), ``answer-is`` (the last "answer is N" /
"Answer: N") and ``last-number`` (the last number in the text). Canonical form:
an exact rational written as an integer (``"18"``), a terminating decimal
(``"2.5"``) or ``p/q``; commas, ``$``, units, ``%`` and trailing ``.0`` go away.

Left out: number words ("eighteen"), scientific notation beyond ``1e3``, and
mixed numbers ("2 1/2" reads as 2 then 1/2 - the last number wins).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

from .base import Extraction
from .chain import Chain, Step

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
            out.append(text[m.end() : i - 1])
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
    text = _FRAC_RE.sub(r"\1/\2", text.replace("−", "-"))
    return [m.group(0) for m in _NUM_RE.finditer(text)]


def _value(number: str) -> Fraction | str:
    """A number's exact value; its raw text when it does not parse."""
    v = to_fraction(number)
    return v if v is not None else number


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{}`` (a chain step shared by the numeric, math and text chains)."""
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None


def _first_value_after(pattern: re.Pattern[str]) -> Callable[[str], Fraction | None]:
    """A step: the first number after the last match of ``pattern`` that has a parseable one."""

    def find(text: str) -> Fraction | None:
        for m in reversed(list(pattern.finditer(text))):
            nums = _numbers(m.group(1))
            v = to_fraction(nums[0]) if nums else None
            if v is not None:
                return v
        return None

    return find


def _boxed_value(text: str) -> Fraction | str | None:
    """The last number in the last box; the box's text when it holds none (the model's stated answer)."""
    box = last_boxed(text)
    if box is None:
        return None
    nums = _numbers(box.replace("\\!", "").replace("{,}", ","))
    v = to_fraction(nums[-1]) if nums else None
    return v if v is not None else box


def _last_value(text: str) -> Fraction | str | None:
    nums = _numbers(text)
    return _value(nums[-1]) if nums else None


def _canonical_value(candidate: Fraction | str) -> str | None:
    return canonical(candidate) if isinstance(candidate, Fraction) else None


NUMERIC: Chain[Fraction | str] = Chain(
    "numeric",
    (
        Step("hash", _first_value_after(_HASH_RE)),  # "#### N", the GSM8K convention
        Step("boxed", _boxed_value),  # a box without a number is unparseable: it is the stated answer
        Step("answer-is", _first_value_after(_ANSWER_RE)),
        Step("last-number", _last_value),
    ),
    canonicalize=_canonical_value,
)


def extract_number(text: str) -> Extraction:
    """The canonical final number of a completion, or why there is none (the `NUMERIC` chain)."""
    return NUMERIC(text)


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
