"""The task and grader tables: names, help, lookup, near-match errors, and what each grader reads."""

import json

import pytest

import marginal.tasks.jsonl as jsonl_mod
from marginal.errors import MarginalError
from marginal.tasks import GRADERS, TASK_NAMES, TASKS, TaskOptions, banks, load_task


def test_task_table_order_help_and_derived_names():
    assert TASKS.names() == ("gsm8k", "math500", "gpqa-diamond", "humaneval", "jsonl:PATH")
    assert TASKS.names() == TASK_NAMES
    assert all(e.help for e in TASKS) and TASKS.kind == "task"
    assert "--grader numeric|exact|math|choice|code" in TASKS.describe()


def test_grader_table_order_help_and_derived_names():
    assert GRADERS.names() == ("numeric", "exact", "math", "choice", "code")
    assert GRADERS.names() == jsonl_mod.GRADERS  # the old tuple, derived from the table
    assert all(e.help for e in GRADERS) and GRADERS.kind == "grader"
    with pytest.raises(
        MarginalError, match=r"unknown grader 'exac' \(did you mean 'exact'\?\); expected one of: choice, code"
    ):
        GRADERS.get("exac")


def test_unknown_task_lists_the_table(monkeypatch):
    monkeypatch.setenv("MARGINAL_OFFLINE", "1")
    with pytest.raises(
        MarginalError,
        match=r"unknown task 'humaneva' \(did you mean 'humaneval'\?\); "
        r"expected one of: gpqa-diamond, gsm8k, humaneval, jsonl:PATH, math500",
    ):
        load_task("humaneva")
    with pytest.raises(MarginalError, match=r"unknown task 'jsonl' \(did you mean 'jsonl:PATH'\?\)"):
        load_task("jsonl")
    with pytest.raises(MarginalError, match=r"task 'jsonl:' needs a path"):
        load_task("jsonl:")
    with pytest.raises(MarginalError, match="jsonl:PATH tasks only, not 'math500'"):
        load_task("math500", answer_field="a")


def test_task_options_user_fields():
    assert not TaskOptions().sets_user_fields()
    assert TaskOptions(grader="exact").sets_user_fields() and TaskOptions(question_field="q").sets_user_fields()
    assert not TaskOptions(data="x", seed=3).sets_user_fields()


@pytest.mark.parametrize(
    "grader,text,answer,step,bank",
    [
        ("numeric", "so #### 4", "4", "hash", banks.numeric_bank),
        ("exact", "Answer: Paris", "paris", "answer-line", banks.exact_bank),
        ("math", "\\boxed{\\frac12}", "\\frac{1}{2}", "boxed", banks.math_bank),
        ("choice", "The answer is (H)", "H", "answer-is", banks.choice_bank),  # letters A-J
    ],
)
def test_each_grader_reads_with_its_chain_and_bank(tmp_path, grader, text, answer, step, bank):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"question": "q?", "answer": answer}) + "\n")
    t = load_task(f"jsonl:{f}", grader=grader)
    (p,) = t.problems()
    e = t.extract(text, p)
    assert (e.answer, e.step) == (answer, step)
    assert t.extract_batch([(text, p)]) == [e]
    assert t.grade(e.answer, p) is True
    assert [x.name for x in t.bank()] == [x.name for x in bank()]


def test_code_rows_are_checked_by_the_code_grader(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"question": "def f(x):\n", "test": "def check(c):\n    pass\n"}) + "\n")
    with pytest.raises(MarginalError, match=r"row 1: --grader code needs a string field 'entry_point'"):
        load_task(f"jsonl:{f}", grader="code")
    f.write_text(
        json.dumps({"question": "def f(x):\n", "entry_point": "f", "test": "def check(c):\n    pass\n"}) + "\n"
    )
    (p,) = load_task(f"jsonl:{f}", grader="code").problems()
    assert p.answer == "def check(c):\n    pass\n" and p.meta["entry_point"] == "f"  # the test is the stored reference
