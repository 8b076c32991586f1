"""Option-letter extraction (GPQA / --grader choice) on hand-written hard cases (no GPQA text)."""

import pytest

from marginal.tasks.choice import extract_letter, grade_letter

CASES = [
    ("The answer is (B)", "B"),
    ("The answer is B.", "B"),
    ("Answer: B) the photon", "B"),
    ("**B**", "B"),
    ("After eliminating options, the correct answer is **C**.", "C"),
    ("A good first step is to compute the energy.\nThe answer is (D)", "D"),
    ("A) is wrong because ... B) is wrong too ... so the answer is C", "C"),
    ("Final answer: (A)", "A"),
    ("\\boxed{C}", "C"),
    ("$\\boxed{\\text{B}}$", "B"),
    ("I first thought the answer is A, but re-checking, the answer is D.", "D"),
    ("Answer:\n\nB", "B"),
    ("The correct option is D because ...", "D"),
    ("Reasoning...\n(C)", "C"),
    ("Reasoning...\nC.", "C"),
    ("Therefore, the answer is option B", "B"),
    ("the answer is: **A) 2.5 eV**", "A"),
    ("Let's go through it. Answer = C", "C"),
    ("Option (B) fits best.\nB", "B"),
    ("So **(D)** is correct.", "D"),
    ("The answer is [B]", "B"),
    ("Answer: `A`", "A"),
    ("Final choice: C", "C"),
    ("We want the energy. A photon of 500 nm... I'd pick (B).", "B"),
]


@pytest.mark.parametrize("text,want", CASES)
def test_extract(text, want):
    e = extract_letter(text)
    assert e.answer == want, e


@pytest.mark.parametrize(
    "text",
    [
        "A photon carries energy.",
        "I am not sure which option is right.",
        "The answer is a matter of debate.",
        "",
        "E) none of these",
    ],
)
def test_no_answer(text):
    e = extract_letter(text)
    assert e.answer is None and e.error == "no_answer"


def test_more_letters_and_grade():
    assert extract_letter("The answer is (H)", letters="ABCDEFGHIJ").answer == "H"
    assert extract_letter("The answer is (H)").answer is None
    assert grade_letter("B", "B") and not grade_letter("C", "B") and grade_letter("b", "(B)")
    assert grade_letter("B", None) is None
