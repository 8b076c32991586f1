"""Extraction chains: the mechanism, and which named step fires for representative texts of each family."""

from fractions import Fraction

import pytest
from test_extract_choice import CASES as CHOICE_CASES
from test_extract_numeric import CASES as NUMERIC_CASES
from test_extract_text import CASES as TEXT_CASES

from marginal.sandbox import Limits
from marginal.tasks import Chain, Extraction, Step
from marginal.tasks.choice import choice_chain, extract_letter
from marginal.tasks.humaneval import CodeGrader, code_chain
from marginal.tasks.math import MATH, extract_math
from marginal.tasks.numeric import NUMERIC, extract_number
from marginal.tasks.text import TEXT, extract_text
from marginal.types import Problem


def test_the_first_step_that_finds_a_candidate_fires():
    calls = []

    def finder(name, out):
        def find(text):
            calls.append(name)
            return out

        return find

    ch = Chain(
        "toy",
        (Step("a", finder("a", None)), Step("b", finder("b", " X ")), Step("c", finder("c", "Y"))),
        canonicalize=lambda s: s.strip().lower(),
    )
    e = ch("anything")
    assert (e.answer, e.error, e.step) == ("x", None, "b")
    assert calls == ["a", "b"]  # later steps are not consulted
    assert ch.find("anything") == ("b", " X ") and ch.step_names() == ("a", "b", "c")


def test_no_step_and_a_failed_candidate_say_why():
    ch = Chain("toy", (Step("never", lambda t: None),), canonicalize=str.upper)
    assert ch("text") == Extraction(None, "no_answer") and ch("text").step is None
    bad = Chain("toy", (Step("raw", lambda t: t),), canonicalize=lambda s: None)
    e = bad("a very long candidate " * 5)
    assert (
        e.answer is None and e.step == "raw" and e.error == "unparseable: " + repr(("a very long candidate " * 5)[:60])
    )
    custom = Chain("toy", (Step("raw", lambda t: t),), canonicalize=lambda s: None, fail=lambda s: "no_answer")
    assert custom("x").error == "no_answer" and custom("x").step == "raw"
    with pytest.raises(ValueError, match="repeated step names"):
        Chain("toy", (Step("a", lambda t: t), Step("a", lambda t: t)), canonicalize=str)


def test_extraction_is_cheap_and_its_step_is_provenance_not_value():
    e = Extraction("18", step="boxed")
    assert e == Extraction("18") and hash(e) == hash(Extraction("18"))
    assert not hasattr(e, "__dict__")  # slots: built for every sample
    with pytest.raises(ValueError):
        Extraction(None, None, step="boxed")


def _check_composition(chain, text, want):
    """The fired step's candidate gives the answer, and no earlier step finds anything (the cascade by hand)."""
    e = chain(text)
    assert e.answer == want, e
    names = chain.step_names()
    fired = names.index(e.step)
    assert all(chain.steps[i].find(text) is None for i in range(fired)), (text, e.step)
    assert chain.canonicalize(chain.steps[fired].find(text)) == want


@pytest.mark.parametrize("text,want", NUMERIC_CASES)
def test_numeric_cases_compose(text, want):
    _check_composition(NUMERIC, text, want)


@pytest.mark.parametrize("text,want", CHOICE_CASES)
def test_choice_cases_compose(text, want):
    _check_composition(choice_chain("ABCD"), text, want)


@pytest.mark.parametrize("text,want", TEXT_CASES)
def test_text_cases_compose(text, want):
    _check_composition(TEXT, text, want)


@pytest.mark.parametrize(
    "text,step,answer",
    [
        ("Total = 1,234,567 dollars.\n#### 1,234,567", "hash", "1234567"),
        ("#### \n#### 64", "hash", "64"),
        ("Therefore the final answer is \\boxed{1,000}.", "boxed", "1000"),
        ("#### N\nso \\boxed{\\frac{3}{4}}", "boxed", "0.75"),  # a marker without a number passes
        ("She makes $18 every day.\nThe answer is $18.", "answer-is", "18"),
        ("Answer: 1/3", "answer-is", "1/3"),
        ("Step 1: 3 + 4 = 7\nThey have 14 marbles left.", "last-number", "14"),
        ("The answer is N.\nShe has 9 left.", "last-number", "9"),
    ],
)
def test_numeric_steps(text, step, answer):
    e = extract_number(text)
    assert (e.step, e.answer) == (step, answer)


def test_numeric_failures_name_their_step():
    e = extract_number("The answer is \\boxed{x+y}.")
    assert (e.step, e.answer) == ("boxed", None) and e.error.startswith("unparseable")
    e = extract_number("I don't know.")
    assert (e.step, e.error) == (None, "no_answer")
    assert NUMERIC.steps[0].find("#### 12") == Fraction(12)  # the numeric chain's candidates are exact values


@pytest.mark.parametrize(
    "text,step",
    [
        ("so the answer is \\boxed{\\frac12}", "boxed"),
        ("The final answer is $\\boxed{90^\\circ}$.", "boxed"),
        ("The final answer is $\\frac{3}{8}$.", "final-answer"),
        ("Final answer: 6-5i", "final-answer"),
    ],
)
def test_math_steps(text, step):
    e = extract_math(text)
    assert e.answer is not None and e.step == step, e


def test_math_failures_name_their_step():
    e = extract_math("\\boxed{}")
    assert (e.step, e.error) == ("boxed", "unparseable: empty answer")
    assert extract_math("I think it is hard.").step is None
    assert MATH.step_names() == ("boxed", "final-answer")


@pytest.mark.parametrize(
    "text,step,letter",
    [
        ("$\\boxed{\\text{B}}$", "boxed", "B"),
        ("A) is wrong because ... so the answer is C", "answer-is", "C"),
        ("Reasoning...\n(C)", "letter-line", "C"),
        ("Reasoning...\nB) because the photon is massless", "option-line", "B"),
        ("So **(D)** is correct.", "emphasized", "D"),
    ],
)
def test_choice_steps(text, step, letter):
    e = extract_letter(text)
    assert (e.step, e.answer) == (step, letter)


def test_choice_chain_per_letter_set():
    assert extract_letter("The answer is (H)", letters="ABCDEFGHIJ").step == "answer-is"
    assert extract_letter("The answer is (H)").step is None
    assert choice_chain("ABCD") is choice_chain("ABCD")  # built once per letter set


@pytest.mark.parametrize(
    "text,step,answer",
    [
        ("The capital is big.\nAnswer: **Paris.**", "answer-line", "paris"),
        ("So \\boxed{\\text{oxygen}}", "boxed", "oxygen"),
        ("I think the answer is Mars.", "answer-is", "mars"),
        ("Let me think.\nJupiter", "last-line", "jupiter"),
    ],
)
def test_text_steps(text, step, answer):
    e = extract_text(text)
    assert (e.step, e.answer) == (step, answer)


def test_text_empty_answer_is_no_answer_from_its_step():
    e = extract_text("Answer: ")
    assert (e.step, e.error) == ("answer-line", "no_answer")


FULL = "def f(x):\n    return x + 1\n"


@pytest.mark.parametrize(
    "text,step",
    [
        ("```python\nimport math\n```\nthen\n```python\n" + FULL + "```", "fence-def"),
        ("```python\nreturn_value = 1\n```\nand a longer one:\n```python\n    return x + 1\n```", "fence-longest"),
        ("```python\n" + FULL, "open-fence"),
        ("    return x + 1\n", "whole-text"),
    ],
)
def test_code_chain_steps(text, step):
    assert code_chain("f").find(text)[0] == step


def test_code_extractions_carry_their_step():
    prompt = 'def f(x):\n    """>>> f(1)\n    2\n    """\n'
    prob = Problem(
        id="toy",
        question=prompt,
        answer=None,
        meta={"prompt": prompt, "entry_point": "f", "test": "def check(c):\n    assert c(1) == 2\n"},
    )
    texts = ["```python\n" + FULL + "```", "    return x + 1\n", "```python\ndef f(x)\n    return 1\n```", "  \n"]
    out = CodeGrader(Limits(timeout=3.0), workers=1).extract_batch([(t, prob) for t in texts])
    assert [e.step for e in out] == ["fence-def", "whole-text", "fence-def", None]
    assert out[0].answer == out[1].answer and out[0].answer.startswith("sig:")
    assert out[2].error.startswith("unparseable: SyntaxError") and out[3].error == "no_answer"
