"""Numeric extraction (GSM8K / --grader numeric) on hand-written hard cases."""

import pytest

from marginal.tasks.numeric import canonical, extract_number, grade_number, to_fraction

CASES = [
    ("The answer is 18.", "18"),
    ("She makes $18 every day.\nThe answer is $18.", "18"),
    ("Total = 1,234,567 dollars.\n#### 1,234,567", "1234567"),
    ("#### 72\nSome trailing chatter about 5 apples.", "72"),
    ("So x = 3.50 hours. The answer is 3.50 hours.", "3.5"),
    ("The answer is 42.0", "42"),
    ("Therefore the final answer is \\boxed{1,000}.", "1000"),
    ("So we get \\boxed{\\frac{3}{4}} of the cake.", "0.75"),
    ("The answer is -7 degrees.", "-7"),
    ("The temperature drops to −5 degrees, so the answer is −5.", "-5"),
    ("It is 25% of the class. The answer is 25%.", "25"),
    ("Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 14\nThey have 14 marbles left.", "14"),
    ("Answer: 1/3", "1/3"),
    ("The answer is 2/4.", "0.5"),
    ("Final answer: 0.125", "0.125"),
    ("The answer is .5", "0.5"),
    ("I computed 10 and then 20, but the answer is 15 because of step 3.", "15"),
    ("The answer is: $ 3,000.00", "3000"),
    ("#### \n#### 64", "64"),  # an empty marker is skipped
    ("The total is 5 dollars.", "5"),
    ("He ran 3 laps of 400m each, 1200 m in total.", "1200"),
    ("The result is 1e3 meters.", "1000"),
    ("The answer is 007.", "7"),
    ("Total = \\boxed{\\$ 12}", "12"),
    ("She pays 12.5 + 12.5 = 25. The answer is 25.", "25"),
    ("To answer this, we need 3 groups. 3 * 4 = 12 in total.", "12"),
    ("The answer is N.\nShe has 9 left.", "9"),
]


@pytest.mark.parametrize("text,want", CASES)
def test_extract(text, want):
    e = extract_number(text)
    assert e.error is None, e
    assert e.answer == want


@pytest.mark.parametrize(
    "text,code",
    [
        ("I don't know.", "no_answer"),
        ("", "no_answer"),
        ("The answer is \\boxed{x+y}.", "unparseable"),
    ],
)
def test_failures_say_why(text, code):
    e = extract_number(text)
    assert e.answer is None and e.error.startswith(code)


def test_canonical_forms():
    assert canonical(to_fraction("1/3")) == "1/3"
    assert canonical(to_fraction("-0.50")) == "-0.5"
    assert canonical(to_fraction("12.000")) == "12"
    assert to_fraction("3/0") is None
    assert to_fraction("abc") is None


def test_grade_number():
    assert grade_number("18", "18") is True
    assert grade_number("18.0", "18") is True
    assert grade_number("19", "18") is False
    assert grade_number("0.5", "1/2") is True
    assert grade_number("5", None) is None
