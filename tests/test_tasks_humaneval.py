"""HumanEval and --grader code: code extraction, behaviour signatures, the reference check."""

import ast
import json
import os
from pathlib import Path

import pytest

from marginal.sandbox import Limits
from marginal.tasks import extract_all, load_task
from marginal.tasks.humaneval import CodeGrader, doctest_inputs, extract_code
from marginal.types import Problem

DATA = Path(os.environ.get("MARGINAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "HumanEval.jsonl.gz").is_file(), reason="MARGINAL_DATA not available")

PROMPT = '''from typing import List


def _helper(x: int) -> int:
    return x


def add_evens(xs: List[int]) -> int:
    """Return the sum of the even numbers in xs.
    >>> add_evens([1, 2, 3, 4])
    6
    >>> add_evens([])
    0
    """
'''
TEST = """
def check(candidate):
    assert candidate([1, 2, 3, 4]) == 6
    assert candidate([]) == 0
    assert candidate([5, 7]) == 0
    assert candidate([-2, 2, 10]) == 10
"""
CANON = "    return sum(x for x in xs if x % 2 == 0)\n"
PROB = Problem(
    id="toy/0",
    question=PROMPT,
    answer=CANON,
    meta={"prompt": PROMPT, "entry_point": "add_evens", "test": TEST, "canonical_solution": CANON},
)

FULL = "def add_evens(xs):\n    return sum(x for x in xs if x % 2 == 0)\n"
ALT = (
    "def add_evens(xs):\n    total = 0\n    for x in xs:\n"
    "        if not x & 1:\n            total += x\n    return total\n"
)
WRONG = "def add_evens(xs):\n    return sum(x for x in xs if x % 2 == 1)\n"

# (completion, expected: "right" = passes and votes with the canonical, "wrong" = runs but fails,
#  or an error code prefix)
CASES = [
    (CANON, "right"),
    ("```python\n" + FULL + "```", "right"),
    ("Sure! Here is the code:\n```python\n" + FULL + "```\nIt sums the evens.", "right"),
    ("```py\n" + ALT + "```", "right"),
    ("```\n" + FULL + "```", "right"),
    ("```python\nimport math\n```\nand\n```python\n" + FULL + "```", "right"),
    ("```python\n" + FULL + "\n\nprint(add_evens([1, 2]))\n```", "right"),
    ("```python\n" + FULL, "right"),  # fence cut by max_tokens
    ("```python\n" + PROMPT + CANON + "```", "right"),
    ("```python\n" + FULL + "\nif __name__ == '__main__':\n    import doctest\n    doctest.testmod()\n```", "right"),
    ("    total = 0\n    for x in xs:\n        if x % 2 == 0:\n            total += x\n    return total\n", "right"),
    ("```python\n" + WRONG + "```", "wrong"),
    ("    pass\n", "wrong"),
    ("    return 0\n", "wrong"),
    ("```python\ndef add_evens(xs):\n    return sum(xs)\n```", "wrong"),
    ("```python\ndef add_evens(xs):\n    raise ValueError('no')\n```", "wrong"),
    ("", "no_answer"),
    ("I cannot solve this.", "unparseable"),
    ("```python\ndef add_evens(xs)\n    return 1\n```", "unparseable"),
    (
        "```python\ndef total(xs):\n    return sum(xs)\n```",
        "wrong",
    ),  # read as a body: the prompt's function returns None
    ("```python\nadd_evens = 3\n```", "crash: NameError"),
    ("```python\n" + FULL + "assert add_evens([1]) == 99\n```", "crash: AssertionError"),
    ("```python\nwhile True:\n    pass\n```", "timeout"),
    ("```python\nimport sys\nsys.exit(0)\n```", "exit"),
    ("```python\nimport os\nos.system('rm -rf /')\n```", "forbidden: os.system"),
    ("```python\ndef add_evens(xs):\n    import os\n    os.kill(os.getppid(), 9)\n```", "forbidden: os.kill"),
]


@pytest.fixture(scope="module")
def grader():
    return CodeGrader(Limits(timeout=3.0), workers=2)


@pytest.fixture(scope="module")
def results(grader):
    return grader.extract_batch([(t, PROB) for t, _ in CASES])


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"case{i}-{c[1]}" for i, c in enumerate(CASES)])
def test_code_cases(i, grader, results):
    text, want = CASES[i]
    e = results[i]
    canon = results[0].answer
    if want == "right":
        assert e.answer == canon, e
        assert grader.grade(e.answer, PROB) is True
    elif want == "wrong":
        assert e.answer is not None and e.answer != canon, e
        assert grader.grade(e.answer, PROB) is False
    else:
        assert e.answer is None and e.error.startswith(want), e


def test_equal_behaviour_votes_together_and_wrong_splits(results):
    sigs = {e.answer for (t, w), e in zip(CASES, results) if w == "right"}
    assert len(sigs) == 1 and next(iter(sigs)).startswith("sig:")
    assert results[12].answer != results[13].answer  # pass (None) vs return 0 behave differently


def test_extract_code_header_and_doctest_inputs():
    prog = extract_code("```python\n" + FULL + "```", PROMPT, "add_evens")
    assert prog.startswith("from typing import List") and "_helper" in prog and FULL.strip() in prog
    assert doctest_inputs(PROMPT, "add_evens") == ["([1, 2, 3, 4], )", "([], )"]


def test_grade_of_an_unseen_signature_is_none():
    assert CodeGrader().grade("sig:0000000000000000", PROB) is None


def test_jsonl_code_grader(tmp_path):
    rows = [
        {"id": "toy", "question": PROMPT, "entry_point": "add_evens", "test": TEST},
        {"id": "toy-ref", "question": PROMPT, "entry_point": "add_evens", "test": TEST, "canonical_solution": CANON},
    ]
    f = tmp_path / "code.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_task(f"jsonl:{f}", grader="code")
    a, b = t.problems()
    ex = extract_all(t, [("```python\n" + FULL + "```", a), ("```python\n" + WRONG + "```", a), (CANON, b)])
    assert t.grade(ex[0].answer, a) is True and t.grade(ex[1].answer, a) is False and t.grade(ex[2].answer, b) is True
    f.write_text(json.dumps({"question": "x"}) + "\n")
    from marginal.errors import MarginalError

    with pytest.raises(MarginalError, match="--grader code needs a string field 'entry_point'"):
        load_task(f"jsonl:{f}", grader="code")


_FLIP = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.Mult,
}


def flip_first_operator(prompt: str, body: str, entry_point: str) -> str | None:
    """The canonical program with the first comparison or arithmetic operator of the function flipped."""
    tree = ast.parse(prompt + body)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _FLIP:
            node.ops[0] = _FLIP[type(node.ops[0])]()
            return ast.unparse(tree)
        if isinstance(node, ast.BinOp) and type(node.op) in _FLIP:
            node.op = _FLIP[type(node.op)]()
            return ast.unparse(tree)
    return None


# flipping the first operator leaves these programs passing their tests (measured over all 164):
EQUIVALENT_MUTANTS = {
    "HumanEval/40": "range(i + 1, len(l)) -> range(i - 1, len(l)) lets j reuse an index; no test list has a "
    "zero-sum triple that needs a reused index",
    "HumanEval/129": "the sentinel val = n * n + 1 becomes n * n - 1, still above every neighbour "
    "of cell 1 in the test grids",
    "HumanEval/147": "i*i - i + 1 -> i*i - i - 1 shifts every a[i] by -2, so each triple sum moves by -6 and "
    "divisibility by 3 is unchanged (a true equivalent mutant)",
}


@needs_data
def test_humaneval_reference_check(monkeypatch):
    monkeypatch.setenv("MARGINAL_DATA", str(DATA))
    t = load_task("humaneval")
    ps = t.problems()
    assert len(ps) == 164 and ps[0].id == "HumanEval/0"
    assert t.bank()[0].name == "default"
    # canonical solutions pass, an empty body fails everywhere, a flipped operator fails (the first 24
    # problems that have one); all in one batch so the task's worker pool stays busy
    flipped = [
        (flip_first_operator(p.meta["prompt"], p.meta["canonical_solution"], p.meta["entry_point"]), p)
        for p in ps[:60]
        if p.id not in EQUIVALENT_MUTANTS
    ]
    flipped = [("```python\n" + f + "\n```", p) for f, p in flipped if f is not None][:24]
    assert len(flipped) == 24
    canon = [(p.meta["canonical_solution"], p) for p in ps]
    empty = [("    pass\n", p) for p in ps]
    t.grader.limits = Limits(timeout=3.0)  # mutants may loop forever; keep the check short
    ex = extract_all(t, canon + empty + flipped)
    graded = [
        (p.id, e, t.grade(e.answer, p) if e.answer is not None else None)
        for (_, p), e in zip(canon + empty + flipped, ex)
    ]
    n = len(ps)
    assert [pid for pid, e, g in graded[:n] if g is not True] == []
    assert [pid for pid, e, g in graded[n : 2 * n] if g is True] == []
    assert [pid for pid, e, g in graded[2 * n :] if g is True] == []
