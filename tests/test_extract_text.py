"""Free-text answers (--grader exact) on hand-written cases."""

import pytest

from marginal.tasks.text import extract_text, grade_text

CASES = [
    ("Answer: Paris", "paris"),
    ("The capital is big.\nAnswer: **Paris.**", "paris"),
    ('Final answer: "Blue whale"', "blue whale"),
    ("answer: (B) mitochondria", "(b) mitochondria"),
    ("Answer:   New   York  ", "new york"),
    ("I think the answer is Mars.", "mars"),
    ("So \\boxed{\\text{oxygen}}", "oxygen"),
    ("Answer: first guess\nAnswer: second guess", "second guess"),
    ("Let me think.\nJupiter", "jupiter"),
    ("**Answer:** `H2O`", "h2o"),
    ("> Answer: yes!", "yes"),
    ("Answer: 'Shakespeare'", "shakespeare"),
]


@pytest.mark.parametrize("text,want", CASES)
def test_extract(text, want):
    assert extract_text(text).answer == want


def test_no_answer_and_grading():
    assert extract_text("").error == "no_answer"
    assert extract_text("Answer: ").error == "no_answer"
    assert extract_text("**Answer:**").error == "no_answer"
    assert grade_text("paris", "Paris.") is True
    assert grade_text("lyon", "Paris") is False
    assert grade_text("x", None) is None
