"""MATH answers: extraction, canonical forms, grading, and the MATH500 reference check."""

import json
import os
from pathlib import Path

import pytest

from marginal.tasks.math import canonical_math, extract_math, grade_math

DATA = Path(os.environ.get("MARGINAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FIXTURE = Path(__file__).parent / "fixtures" / "math500_reference_disagreements.json"

# (completion, reference): the extracted answer must grade equal to the reference
EQUIVALENT = [
    ("so the answer is \\boxed{\\frac12}", "0.5"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}"),
    ("The final answer is $\\boxed{90^\\circ}$.", "90"),
    ("\\boxed{90}", "90^\\circ"),
    ("\\boxed{\\left[0, 1\\right)}", "[0,1)"),
    ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{\\$ 18.90}", "18.90"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed{-2, 1}", "1,-2"),
    ("We first get \\boxed{3} and then correct it: \\boxed{4}", "4"),
    ("\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt3}"),
    ("\\boxed{2\\pi}", "2 \\pi"),
    ("The final answer is $\\frac{3}{8}$.", "\\frac38"),
    ("Final answer: 6-5i", "6 - 5i"),
    ("\\boxed{\\textbf{(C)}}", "\\text{(C)}"),
    ("\\boxed{(-\\infty, 2) \\cup (3, \\infty)}", "(-\\infty,2)\\cup(3,\\infty)"),
    ("\\boxed{x^2 + 2x + 1}", "(x+1)^2"),
    ("\\boxed{10\\%}", "10"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\{1, 2, 3\\}}", "1,2,3"),
]

DIFFERENT = [
    ("\\boxed{\\frac{1}{3}}", "0.33"),
    ("\\boxed{[0, 1]}", "[0,1)"),
    ("\\boxed{(1, 2)}", "(2, 1)"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{2}"),
    ("\\boxed{-5}", "5"),
    ("\\boxed{\\text{Evelyn}}", "\\text{Emily}"),
]


@pytest.mark.parametrize("text,ref", EQUIVALENT)
def test_equivalent(text, ref):
    e = extract_math(text)
    assert e.answer is not None, e
    assert grade_math(e.answer, ref) is True, (e.answer, ref)


@pytest.mark.parametrize("text,ref", DIFFERENT)
def test_different(text, ref):
    e = extract_math(text)
    assert e.answer is not None and grade_math(e.answer, ref) is False, (e.answer, ref)


def test_equal_answers_share_one_canonical_form():
    groups = [
        ["\\frac12", "\\dfrac{1}{2}", "0.5", "\\tfrac{1}{2}", "\\frac{1}{2}."],
        ["\\left[0,1\\right)", "[0, 1)", "[0,1)"],
        ["90^\\circ", "90", "90^{\\circ}"],
        ["\\text{Evelyn}", "Evelyn", "\\textbf{Evelyn}"],
        ["(C)", "\\text{(C)}", "C"],
        ["x=5", "5"],
    ]
    for g in groups:
        assert len({canonical_math(s) for s in g}) == 1, {s: canonical_math(s) for s in g}


@pytest.mark.parametrize(
    "text,code",
    [
        ("I think it is hard.", "no_answer"),
        ("\\boxed{}", "unparseable"),
        ("", "no_answer"),
    ],
)
def test_failures(text, code):
    e = extract_math(text)
    assert e.answer is None and e.error.startswith(code)


def test_no_reference_grades_none():
    assert grade_math("1", None) is None


@pytest.mark.skipif(not (DATA / "math500_test.jsonl.gz").is_file(), reason="MARGINAL_DATA not available")
def test_math500_reference_solutions_agree(monkeypatch):
    from marginal.tasks import load_task

    monkeypatch.setenv("MARGINAL_DATA", str(DATA))
    t = load_task("math500")
    ps = t.problems()
    assert len(ps) == 500 and len({p.id for p in ps}) == 500
    disagree = []
    for p in ps:
        e = t.extract(p.meta["solution"], p)
        if e.answer is None or t.grade(e.answer, p) is not True:
            disagree.append(p.id)
    listed = {d["unique_id"] for d in json.loads(FIXTURE.read_text())["disagreements"]}
    assert set(disagree) == listed
    assert len(disagree) <= 5  # >= 99% agreement
    # the grader is not lenient: the next problem's reference grades wrong almost always
    wrong = sum(t.grade(canonical_math(ps[(i + 1) % 500].answer), p) is True for i, p in enumerate(ps))
    assert wrong <= 5
