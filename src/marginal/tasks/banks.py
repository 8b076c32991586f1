"""Built-in prior banks, one per answer family, in a fixed order (default first).

Each bank spans personas (teacher, careful checker, domain expert), instruction
styles (step by step, concise, plan-then-solve, verify-then-answer), few-shot
exemplar sets and output-format hints. Every prior asks for the answer in a
form the family's extractor reads (``The answer is N`` / ``\\boxed{}`` /
``The answer is (X)`` / a fenced Python block / ``Answer: ...``).

GSM8K few-shot exemplars come from ``gsm8k_train_head64.jsonl`` (read at run
time through the data resolution, never copied here) in disjoint sets of 4.
MATH, GPQA-style and code exemplars are written for this project (none is a
benchmark row). Left out: model-specific priors (a prior's ``model`` field is
for user banks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..types import Prior

# ---------------------------------------------------------------- numeric (GSM8K)

_NUM_END = "End your response with a final line of the form 'The answer is N.' where N is a number."

_NUMERIC: list[tuple[str, str | None, str, str]] = [
    # name, system, template, description
    ("default", None, "{question}\n\n" + _NUM_END, "plain question with the answer-format line"),
    ("step-by-step", None, "{question}\n\nLet's think step by step. " + _NUM_END, "zero-shot chain of thought"),
    (
        "teacher",
        "You are a patient math teacher who explains each step clearly to a student.",
        "{question}\n\nExplain the solution step by step, then " + _NUM_END[0].lower() + _NUM_END[1:],
        "teacher persona",
    ),
    (
        "checker",
        "You are a careful accountant. You double-check every calculation before you state a result.",
        "{question}\n\nCompute carefully and check each arithmetic step. " + _NUM_END,
        "careful-checker persona",
    ),
    ("concise", None, "{question}\n\nBe brief: write only the key calculations. " + _NUM_END, "short answers"),
    (
        "plan-solve",
        None,
        "{question}\n\nFirst, write a short plan listing the quantities to find. Then carry out the plan. " + _NUM_END,
        "plan-then-solve",
    ),
    (
        "verify",
        None,
        "{question}\n\nSolve the problem, then verify the result by plugging it back into the story. " + _NUM_END,
        "verify-then-answer",
    ),
    (
        "format-hash",
        None,
        "{question}\n\nWork it out, then write the final numeric answer on its own line after '#### ' "
        "(for example '#### 42').",
        "output-format hint: GSM8K '#### N'",
    ),
    (
        "format-boxed",
        None,
        "{question}\n\nSolve it and put the final number in \\boxed{{}}, for example \\boxed{{42}}.".replace(
            "{{", "{"
        ).replace("}}", "}"),
        "output-format hint: LaTeX \\boxed{N}",
    ),
    # Deliberately weak priors, last in the bank so that "the first K" never picks them by accident:
    # they give every pool sub-banks whose priors disagree in quality (the misaligned side).
    (
        "answer-only",
        None,
        "{question}\n\nDo not show any working. Reply with one line only: 'The answer is N.' where N is a number.",
        "weak on purpose: the final number only, no working",
    ),
]


def _clean_gsm8k_solution(answer: str) -> str:
    """A train solution without calculator annotations, ending 'The answer is N.'."""
    text = re.sub(r"<<[^>]*>>", "", answer)
    body, _, final = text.rpartition("####")
    return f"{body.strip()}\nThe answer is {final.strip().replace(',', '')}."


def _wrong_gsm8k_solution(answer: str) -> str:
    """A train solution whose stated final answer is wrong on purpose (the true one doubled, plus one)."""
    right = _clean_gsm8k_solution(answer)
    body, _, final = right.rpartition("The answer is ")
    value = final.rstrip(".")
    wrong = str(int(value) * 2 + 1) if value.lstrip("-").isdigit() else value + "1"
    return f"{body}The answer is {wrong}."


def numeric_bank(fewshot_pool: Sequence[tuple[str, str]] | None = None, shots: int = 4) -> list[Prior]:
    """The GSM8K / numeric bank; with a few-shot pool, three disjoint exemplar sets are added after
    the zero-shot priors (``fewshot-a``, ``-b``, ``-c``: pool rows 0-3, 4-7, 8-11), and a weak one
    at the end (``fewshot-wrong``: rows 12-15 with wrong stated answers)."""
    bank = [Prior(name=n, system=s, template=t, description=d) for n, s, t, d in _NUMERIC]
    if fewshot_pool:
        pool = [(q, _clean_gsm8k_solution(a)) for q, a in fewshot_pool]
        for i, tag in enumerate("abc"):
            shots_i = pool[i * shots : (i + 1) * shots]
            if len(shots_i) == shots:
                bank.insert(
                    7 + i,
                    Prior(
                        name=f"fewshot-{tag}",
                        template="{question}\n\n" + _NUM_END,
                        fewshot=tuple(shots_i),
                        description=f"{shots} GSM8K train exemplars (rows {i * shots}-{(i + 1) * shots - 1})",
                    ),
                )
        wrong = [(q, _wrong_gsm8k_solution(a)) for q, a in fewshot_pool[3 * shots : 4 * shots]]
        if len(wrong) == shots:
            bank.append(
                Prior(
                    name="fewshot-wrong",
                    template="{question}\n\n" + _NUM_END,
                    fewshot=tuple(wrong),
                    description=f"weak on purpose: {shots} GSM8K train exemplars (rows {3 * shots}-{4 * shots - 1}) "
                    "whose stated answers are wrong (2x + 1)",
                )
            )
    return bank


# ---------------------------------------------------------------- MATH

_BOX = "Put your final answer within \\boxed{}."

_MATH_SHOTS_A = (
    (
        "What is the sum of all positive divisors of 18?",
        "The divisors of $18 = 2 \\cdot 3^2$ are 1, 2, 3, 6, 9, 18. Their sum is $1+2+3+6+9+18 = 39$.\n\\boxed{39}",
    ),
    (
        "Simplify $\\sqrt{50} - \\sqrt{8}$.",
        "$\\sqrt{50} = 5\\sqrt{2}$ and $\\sqrt{8} = 2\\sqrt{2}$, so the difference is $3\\sqrt{2}$.\n"
        "\\boxed{3\\sqrt{2}}",
    ),
    (
        "Solve for $x$: $\\frac{x+1}{3} = \\frac{x-1}{2}$.",
        "Cross-multiplying gives $2(x+1) = 3(x-1)$, so $2x + 2 = 3x - 3$ and $x = 5$.\n\\boxed{5}",
    ),
)
_MATH_SHOTS_B = (
    (
        "A fair coin is flipped 4 times. What is the probability of getting exactly 2 heads? "
        "Express your answer as a common fraction.",
        "There are $2^4 = 16$ outcomes and $\\binom{4}{2} = 6$ have exactly two heads, "
        "so the probability is $\\frac{6}{16} = \\frac{3}{8}$.\n\\boxed{\\frac{3}{8}}",
    ),
    (
        "Find all real $x$ with $x^2 - 5x + 6 < 0$. Express your answer in interval notation.",
        "$x^2 - 5x + 6 = (x-2)(x-3)$ is negative strictly between its roots.\n\\boxed{(2,3)}",
    ),
    (
        "What is the distance between the points $(1, 2)$ and $(4, 6)$?",
        "The distance is $\\sqrt{(4-1)^2 + (6-2)^2} = \\sqrt{9 + 16} = 5$.\n\\boxed{5}",
    ),
)

_MATH: list[tuple[str, str | None, str, str, tuple[tuple[str, str], ...]]] = [
    ("default", None, "{question}\n\n" + _BOX, "plain problem with the \\boxed{} instruction", ()),
    (
        "step-by-step",
        None,
        "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
        "zero-shot chain of thought",
        (),
    ),
    (
        "teacher",
        "You are a friendly mathematics teacher who explains each idea simply.",
        "{question}\n\nExplain the solution as you would to a student. " + _BOX,
        "teacher persona",
        (),
    ),
    (
        "checker",
        "You are a meticulous mathematician who checks every algebraic step and every case.",
        "{question}\n\nSolve carefully, checking each step. " + _BOX,
        "careful-checker persona",
        (),
    ),
    (
        "expert",
        "You are an International Mathematical Olympiad gold medalist.",
        "{question}\n\nGive a rigorous solution. " + _BOX,
        "domain-expert persona",
        (),
    ),
    ("concise", None, "{question}\n\nAnswer concisely with only the essential steps. " + _BOX, "short answers", ()),
    (
        "plan-solve",
        None,
        "{question}\n\nFirst outline a plan (which facts or formulas you will use), then execute it. " + _BOX,
        "plan-then-solve",
        (),
    ),
    (
        "verify",
        None,
        "{question}\n\nSolve the problem, then verify your answer by substitution or an independent check. " + _BOX,
        "verify-then-answer",
        (),
    ),
    (
        "fewshot-a",
        None,
        "{question}\n\n" + _BOX,
        "3 worked exemplars (number theory, radicals, equations)",
        _MATH_SHOTS_A,
    ),
    (
        "fewshot-b",
        None,
        "{question}\n\n" + _BOX,
        "3 worked exemplars (probability, intervals, geometry)",
        _MATH_SHOTS_B,
    ),
    (
        "format-final",
        None,
        "{question}\n\nEnd with the sentence 'The final answer is $\\boxed{ANSWER}$.' in simplest exact form "
        "(fractions, radicals, intervals in LaTeX).",
        "output-format hint: simplest exact LaTeX in \\boxed{}",
        (),
    ),
]


def math_bank() -> list[Prior]:
    """The MATH bank (11 priors)."""
    return [Prior(name=n, system=s, template=t, description=d, fewshot=f) for n, s, t, d, f in _MATH]


# ---------------------------------------------------------------- multiple choice (GPQA)

_MC_END = "End with a final line of the form 'The answer is (X)' where X is one of A, B, C, D."

_MC_SHOTS_A = (
    (
        "Which quantity is conserved in a perfectly elastic collision but not in a perfectly inelastic one?\n\n"
        "A) Linear momentum\nB) Total energy\nC) Kinetic energy\nD) Mass",
        "Momentum, total energy and mass are conserved in both kinds of collision. Only kinetic energy is lost "
        "(to heat and deformation) in an inelastic collision.\nThe answer is (C)",
    ),
    (
        "What is the hybridization of the carbon atom in carbon dioxide?\n\nA) sp3\nB) sp2\nC) sp\nD) dsp2",
        "The carbon in O=C=O forms two double bonds and has no lone pairs, so it has two electron domains: "
        "linear geometry, sp hybridization.\nThe answer is (C)",
    ),
)
_MC_SHOTS_B = (
    (
        "In eukaryotic cells, where does the Krebs (citric acid) cycle take place?\n\n"
        "A) Cytosol\nB) Mitochondrial matrix\nC) Inner mitochondrial membrane\nD) Nucleus",
        "Glycolysis runs in the cytosol and the electron transport chain in the inner membrane; the citric acid "
        "cycle enzymes sit in the mitochondrial matrix.\nThe answer is (B)",
    ),
    (
        "A photon has a wavelength of 500 nm. Approximately what is its energy?\n\n"
        "A) 0.25 eV\nB) 2.5 eV\nC) 25 eV\nD) 250 eV",
        "E = hc / lambda = 1240 eV nm / 500 nm = 2.48 eV, about 2.5 eV.\nThe answer is (B)",
    ),
)

_MC: list[tuple[str, str | None, str, str, tuple[tuple[str, str], ...]]] = [
    ("default", None, "{question}\n\n" + _MC_END, "plain question with the answer-format line", ()),
    ("step-by-step", None, "{question}\n\nThink step by step. " + _MC_END, "zero-shot chain of thought", ()),
    (
        "teacher",
        "You are a university science teacher who explains concepts clearly.",
        "{question}\n\nExplain the relevant concept, then " + _MC_END[0].lower() + _MC_END[1:],
        "teacher persona",
        (),
    ),
    (
        "checker",
        "You are a careful reviewer who checks every option against the facts before choosing.",
        "{question}\n\nCheck each option in turn. " + _MC_END,
        "careful-checker persona",
        (),
    ),
    (
        "expert",
        "You are a PhD-level expert in physics, chemistry and biology.",
        "{question}\n\nAnswer as a domain expert. " + _MC_END,
        "domain-expert persona",
        (),
    ),
    ("concise", None, "{question}\n\nAnswer with at most two sentences of reasoning. " + _MC_END, "short answers", ()),
    (
        "plan-solve",
        None,
        "{question}\n\nFirst state which principle decides the question, then apply it. " + _MC_END,
        "plan-then-solve",
        (),
    ),
    (
        "verify",
        None,
        "{question}\n\nPick an answer, then verify it by ruling out each other option. " + _MC_END,
        "verify-then-answer (elimination)",
        (),
    ),
    ("fewshot-a", None, "{question}\n\n" + _MC_END, "2 worked exemplars (physics, chemistry)", _MC_SHOTS_A),
    ("fewshot-b", None, "{question}\n\n" + _MC_END, "2 worked exemplars (biology, physics)", _MC_SHOTS_B),
    (
        "format-letter",
        None,
        "{question}\n\nReply with the letter of the correct option in the form 'Answer: X' on the last line.",
        "output-format hint: 'Answer: X'",
        (),
    ),
]


def choice_bank() -> list[Prior]:
    """The multiple-choice bank (11 priors)."""
    return [Prior(name=n, system=s, template=t, description=d, fewshot=f) for n, s, t, d, f in _MC]


# ---------------------------------------------------------------- code (HumanEval)

_CODE_END = "Return the complete function in one ```python code block."

_CODE_SHOTS = (
    (
        'def count_vowels(s: str) -> int:\n    """Return the number of vowels (a, e, i, o, u) in s, ignoring case.\n'
        '    >>> count_vowels("Hello")\n    2\n    """\n',
        '```python\ndef count_vowels(s: str) -> int:\n    return sum(1 for ch in s.lower() if ch in "aeiou")\n```',
    ),
    (
        "from typing import List\n\n\ndef running_max(xs: List[int]) -> List[int]:\n"
        '    """Return the running maximum of xs.\n    >>> running_max([1, 3, 2, 5])\n    [1, 3, 3, 5]\n    """\n',
        "```python\nfrom typing import List\n\n\ndef running_max(xs: List[int]) -> List[int]:\n    out = []\n"
        "    best = None\n    for x in xs:\n"
        "        best = x if best is None else max(best, x)\n        out.append(best)\n"
        "    return out\n```",
    ),
)

_CODE: list[tuple[str, str | None, str, str, tuple[tuple[str, str], ...]]] = [
    (
        "default",
        None,
        "Complete the following Python function.\n\n{question}\n\n" + _CODE_END,
        "plain completion request",
        (),
    ),
    (
        "step-by-step",
        None,
        "Complete the following Python function.\n\n{question}\n\nFirst explain the algorithm step by step, then "
        + _CODE_END[0].lower()
        + _CODE_END[1:],
        "reason, then code",
        (),
    ),
    (
        "teacher",
        "You are a programming teacher who writes clear, simple, correct code.",
        "Complete the following Python function.\n\n{question}\n\n" + _CODE_END,
        "teacher persona",
        (),
    ),
    (
        "checker",
        "You are a careful software engineer who considers edge cases (empty inputs, negatives, duplicates).",
        "Complete the following Python function, handling edge cases.\n\n{question}\n\n" + _CODE_END,
        "careful-checker persona",
        (),
    ),
    (
        "expert",
        "You are an expert Python developer.",
        "Implement this function idiomatically.\n\n{question}\n\n" + _CODE_END,
        "domain-expert persona",
        (),
    ),
    ("concise", None, "{question}\n\nWrite only the code, no explanation. " + _CODE_END, "code only", ()),
    (
        "plan-solve",
        None,
        "Complete the following Python function.\n\n{question}\n\nWrite a short plan as comments first, then the code. "
        + _CODE_END,
        "plan-then-code",
        (),
    ),
    (
        "verify",
        None,
        "Complete the following Python function.\n\n{question}\n\nAfter writing it, trace the docstring examples "
        "by hand to check the code. " + _CODE_END,
        "verify-then-answer (trace the examples)",
        (),
    ),
    (
        "fewshot",
        None,
        "Complete the following Python function.\n\n{question}\n\n" + _CODE_END,
        "2 worked exemplars written for this project",
        _CODE_SHOTS,
    ),
    (
        "format-def",
        None,
        "{question}\n\nRewrite the whole function, starting with its 'def' line and keeping its signature, "
        "in a ```python block. Do not include tests or example usage.",
        "output-format hint",
        (),
    ),
]


def code_bank() -> list[Prior]:
    """The code bank (10 priors)."""
    return [Prior(name=n, system=s, template=t, description=d, fewshot=f) for n, s, t, d, f in _CODE]


# ---------------------------------------------------------------- exact (free text)

_EX_END = "End with a final line of the form 'Answer: X' where X is your short final answer."

_EXACT: list[tuple[str, str | None, str, str]] = [
    ("default", None, "{question}\n\n" + _EX_END, "plain question with the answer-format line"),
    ("step-by-step", None, "{question}\n\nThink step by step. " + _EX_END, "zero-shot chain of thought"),
    ("teacher", "You are a patient teacher who explains clearly.", "{question}\n\n" + _EX_END, "teacher persona"),
    (
        "checker",
        "You are a careful fact-checker who verifies each claim.",
        "{question}\n\n" + _EX_END,
        "careful-checker persona",
    ),
    ("expert", "You are a domain expert.", "{question}\n\n" + _EX_END, "domain-expert persona"),
    ("concise", None, "{question}\n\nAnswer in as few words as possible. " + _EX_END, "short answers"),
    ("plan-solve", None, "{question}\n\nFirst plan, then solve. " + _EX_END, "plan-then-solve"),
    ("verify", None, "{question}\n\nAnswer, then double-check your answer. " + _EX_END, "verify-then-answer"),
    ("format-only", None, "{question}\n\nReply with only 'Answer: X'.", "output-format hint"),
]


def exact_bank() -> list[Prior]:
    """The free-text bank (9 priors)."""
    return [Prior(name=n, system=s, template=t, description=d) for n, s, t, d in _EXACT]
