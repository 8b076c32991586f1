"""Prior selection and YAML banks."""

import pytest

from marginal.errors import MarginalError
from marginal.priors import load_bank, select_priors
from marginal.tasks.banks import choice_bank, code_bank, exact_bank, math_bank, numeric_bank
from marginal.types import Prior

BANK = [Prior(name=n) for n in ("default", "teacher", "concise", "fewshot-a")]


def test_select_by_count_and_name():
    assert select_priors(BANK, 2) == BANK[:2]
    assert select_priors(BANK, "3") == BANK[:3]
    assert select_priors(BANK, "concise, default") == [BANK[2], BANK[0]]
    with pytest.raises(MarginalError, match=r"--priors 5 asks for more priors than the bank has \(4"):
        select_priors(BANK, 5)
    with pytest.raises(MarginalError, match=">= 1"):
        select_priors(BANK, "0")
    with pytest.raises(MarginalError, match=r"unknown prior 'teacer'.*did you mean 'teacher'"):
        select_priors(BANK, "default,teacer")
    with pytest.raises(MarginalError, match="more than once"):
        select_priors(BANK, "default,default")
    with pytest.raises(MarginalError, match="count or comma-separated"):
        select_priors(BANK, "default,,teacher")


@pytest.mark.parametrize("make", [lambda: numeric_bank(), math_bank, choice_bank, code_bank, exact_bank])
def test_builtin_banks(make):
    bank = make()
    names = [p.name for p in bank]
    assert len(bank) >= 8 and names[0] == "default" and len(set(names)) == len(names)
    styles = {"teacher", "checker", "step-by-step", "concise", "plan-solve", "verify"}
    assert styles <= set(names)
    for p in bank:
        p.render("Q")  # renders


GOOD = """
- name: tutor
  system: You are a tutor.
  template: "{question}\\nEnd with 'The answer is N.'"
  fewshot:
    - {question: "1+1?", answer: "The answer is 2."}
  model: smollm2-135m
  description: a tutor
- name: plain
"""


def test_load_bank(tmp_path):
    f = tmp_path / "bank.yaml"
    f.write_text(GOOD)
    bank = load_bank(f)
    assert [p.name for p in bank] == ["tutor", "plain"]
    assert bank[0].fewshot == (("1+1?", "The answer is 2."),) and bank[0].model == "smollm2-135m"
    assert bank[1].template == "{question}"
    f.write_text("priors:\n" + "\n".join("  " + ln for ln in GOOD.splitlines()))
    assert [p.name for p in load_bank(f)] == ["tutor", "plain"]


@pytest.mark.parametrize(
    "text,match",
    [
        (
            "- name: a\n  templat: '{question}'\n",
            r"entry 1 \('a'\): unknown key 'templat' \(did you mean 'template'\?\)",
        ),
        (
            "- name: a\n- name: b\n  template: 'no placeholder'\n",
            r"entry 2 \('b'\): template must contain the placeholder",
        ),
        ("- name: a\n- name: a\n", r"entry 2 \('a'\): duplicate prior name 'a' \(first used by entry 1\)"),
        ("- name: a\n  system: [1\n", r"bank\.yaml:\d+: bad YAML"),
        ("- system: x\n", r"entry 1: missing required key 'name'"),
        ("", r"expected a non-empty list of priors"),
        ("name: a\n", r"expected a non-empty list"),
        ("- name: a\n  fewshot: [{question: q}]\n", r"fewshot item 1 must be a mapping"),
        ("- name: a\n  system: 3\n", r"'system' must be a string"),
        ("- just-a-string\n", r"entry 1: expected a mapping"),
    ],
)
def test_bad_banks(tmp_path, text, match):
    f = tmp_path / "bank.yaml"
    f.write_text(text)
    with pytest.raises(MarginalError, match=match) as e:
        load_bank(f)
    assert str(f) in str(e.value)


def test_missing_bank_file(tmp_path):
    with pytest.raises(MarginalError, match="cannot read priors file"):
        load_bank(tmp_path / "none.yaml")


def test_cli_priors_lists_bank_and_yaml(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from marginal.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "What is 6 times 7?", "answer": 42}) + "\n")
    r = CliRunner().invoke(app, ["priors", f"jsonl:{data}"])
    assert r.exit_code == 0, r.output
    names = [p.name for p in numeric_bank()]
    assert all(n in r.output for n in names) and "What is 6 times 7?" in r.output
    assert r.output.index(names[0]) < r.output.index(names[-1])
    bank = tmp_path / "bank.yaml"
    bank.write_text(GOOD)
    r = CliRunner().invoke(app, ["priors", f"jsonl:{data}", "--priors-file", str(bank)])
    assert r.exit_code == 0 and "tutor" in r.output and "You are a tutor." in r.output and "default" not in r.output
    bank.write_text("- name: a\n  templat: x\n")
    r = CliRunner().invoke(app, ["priors", f"jsonl:{data}", "--priors-file", str(bank)])
    assert isinstance(r.exception, MarginalError) and "unknown key 'templat'" in str(r.exception)


def test_cli_priors_never_shows_gpqa_rows(monkeypatch):
    import os
    from pathlib import Path

    from typer.testing import CliRunner

    from marginal.cli import app
    from marginal.tasks import load_task

    data = Path(os.environ.get("MARGINAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (data / "gpqa_dataset.zip").is_file():
        pytest.skip("MARGINAL_DATA not available")
    monkeypatch.setenv("MARGINAL_DATA", str(data))
    r = CliRunner().invoke(app, ["priors", "gpqa-diamond"])
    assert r.exit_code == 0
    first = load_task("gpqa-diamond").problems()[0].question
    leaked = first.splitlines()[0][:40] in r.output
    assert leaked is False and "made-up example" in r.output


def test_fewshot_answers_are_read_by_their_extractors():
    from marginal.tasks.choice import extract_letter
    from marginal.tasks.math import extract_math

    for bank, extract in ((math_bank(), extract_math), (choice_bank(), extract_letter)):
        shots = [a for p in bank for _, a in p.fewshot]
        assert len(shots) >= 4
        assert all(extract(a).answer is not None for a in shots)
    for p in math_bank():
        assert "boxed" in p.template
    for p in choice_bank():
        assert "The answer is (X)" in p.template or "Answer: X" in p.template
    for p in code_bank():
        assert "```python" in p.template
