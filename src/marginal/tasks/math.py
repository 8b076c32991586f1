"""MATH500 (and ``--grader math``): final answers in LaTeX, canonicalized with
math-verify + sympy so that equivalent answers vote together.

Extraction is the `MATH` chain: ``boxed`` (the last ``\\boxed{}``/``\\fbox{}``),
else ``final-answer`` (the last "final answer is X" / "answer: X", with or
without ``$...$``). Canonical form: the answer is parsed by math-verify
(latex2sympy) and printed back with ``sympy.latex``, so
``\\frac12``, ``\\dfrac{1}{2}`` and ``0.5`` all read ``\\frac{1}{2}``,
``\\left[0,1\\right)`` and ``[0, 1)`` agree, a lone ``x = 5`` becomes ``5``,
degrees, ``\\text{}``, ``\\$`` and ``\\%`` are dropped. Answers that do not
parse keep a whitespace- and markup-normalized string. Grading uses
``math_verify.verify`` (symbolic and numeric equality, intervals, tuples, sets).

Left out: matrices beyond what math-verify parses, and multi-part answers
split across several boxes (only the last box counts).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import MarginalError
from ..types import Prior, Problem
from . import data as _data
from .banks import math_bank
from .base import Extraction
from .chain import Chain, Step, unparseable
from .numeric import last_boxed

_FINAL_RE = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*[:]?\s*(\$\$?[^$]+\$\$?|[^\n]+)", re.IGNORECASE)


MAX_PARSE = 400
"""Answers longer than this (characters) keep their normalized text instead of being parsed."""


def _main_thread() -> bool:
    """math-verify's timeouts use SIGALRM (main thread only); elsewhere they are off, and so is its warning."""
    if threading.current_thread() is threading.main_thread():
        return True
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return False


def normalize_latex(s: str) -> str:
    """Light textual clean-up of a LaTeX answer (also the fallback canonical form)."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:[,;:!]|quad|qquad)", "", s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{\s*([^{}]*?)\s*\}", r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    s = re.sub(r"\s*([,=()\[\]{}+\-])\s*", r"\1", s)
    s = re.sub(r"^\(([A-Za-z])\)$", r"\1", s)  # "(C)" -> "C"
    return s


@lru_cache(maxsize=65536)
def _parse(s: str) -> tuple[Any, ...]:
    from math_verify import parse
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    kw: dict[str, Any] = {} if _main_thread() else {"parsing_timeout": None}
    try:
        return tuple(parse("$" + s + "$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], **kw))
    except Exception:  # math-verify raises on pathological input; treat as unparsed
        return ()


def canonical_math(answer: str) -> str:
    """The canonical string of a LaTeX answer (see the module docstring)."""
    import sympy

    s = normalize_latex(answer)
    if not s:
        return s
    words = re.fullmatch(r"[A-Za-z][A-Za-z ]*", s)
    if words and (len(s) >= 3 or re.search(r"\\(?:text|textbf|mathrm|mbox)\{[A-Za-z ]{2,}\}", answer)):
        return s.casefold()  # a word answer ("Evelyn"), not a product of symbols
    if len(s) > MAX_PARSE:  # runaway boxes from small models: too long to be an answer worth parsing
        return s
    parsed = _parse(s)
    expr = parsed[0] if parsed else None
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        expr = expr.rhs
    if isinstance(expr, sympy.Basic):
        try:
            expr = expr.doit()
            if isinstance(expr, sympy.Symbol):  # a word such as \text{Evelyn}: keep the text
                return s.casefold()
            out = sympy.latex(expr)
        except Exception:
            return s
        out = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", out)
        out = out.replace("\\ ", " ")
        out = re.sub(r"\s+", " ", out).strip()
        return out
    return s


def _final_answer(text: str) -> str | None:
    """The last "final answer is X" / "answer: X", without its ``$...$``."""
    ms = list(_FINAL_RE.finditer(text))
    if not ms:
        return None
    raw = ms[-1].group(1)
    inner = re.search(r"\$\$?([^$]+)\$\$?", raw)
    return inner.group(1) if inner else raw


def _canonical_answer(raw: str) -> str | None:
    return canonical_math(raw) if raw.strip() else None


def _math_failure(raw: str) -> str:
    return unparseable(raw) if raw.strip() else "unparseable: empty answer"


MATH: Chain[str] = Chain(
    "math",
    (
        Step("boxed", last_boxed),
        Step("final-answer", _final_answer),
    ),
    canonicalize=_canonical_answer,
    fail=_math_failure,
)


def extract_math(text: str) -> Extraction:
    """The canonical final answer of a completion, or why there is none (the `MATH` chain)."""
    return MATH(text)


def grade_math(answer: str, reference: str | None) -> bool | None:
    """Whether a (canonical) answer equals the reference, by math-verify; None without a reference."""
    if reference is None:
        return None
    ref_c = canonical_math(reference)
    if answer == ref_c:
        return True
    from math_verify import verify

    gold, pred = _parse(normalize_latex(reference)), _parse(answer)
    if not gold or not pred:
        return answer.casefold() == ref_c.casefold()
    kw: dict[str, Any] = {} if _main_thread() else {"timeout_seconds": None}
    try:
        return bool(verify(list(gold), list(pred), **kw))
    except Exception:
        return False


class MATH500:
    """MATH500 (500 problems of the PRM800K test split); ids are the rows' ``unique_id``."""

    name = "math500"

    def __init__(self, data: str | Path | None = None) -> None:
        rows, self.source = _data.resolve(_data.MATH500, data)
        probs = []
        for i, r in enumerate(rows):
            try:
                probs.append(
                    Problem(
                        id=str(r.get("unique_id") or f"math500/{i}"),
                        question=str(r["problem"]),
                        answer=str(r["answer"]),
                        meta={"solution": r.get("solution", ""), "subject": r.get("subject"), "level": r.get("level")},
                    )
                )
            except KeyError as e:
                raise MarginalError(
                    f"{self.source}: row {i + 1} is not a MATH row (missing {e}); expected problem, answer"
                ) from None
        self._problems = probs

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def bank(self) -> list[Prior]:
        return math_bank()

    def extract(self, text: str, problem: Problem) -> Extraction:
        return extract_math(text)

    def grade(self, answer: str, problem: Problem) -> bool | None:
        return grade_math(answer, problem.answer)
