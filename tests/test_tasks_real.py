"""Every task kind on the real bundled model: render a prior, sample, extract, grade.

One problem x 1 prior x 2 samples per task, all five tasks in one batched
generate call with 16 new tokens (the 135M model rarely answers that fast;
what is checked is that every completion ends as a canonical answer or a
recorded reason, and that answers are graded)."""

import json

import pytest

from marginal.tasks import extract_all, load_task
from marginal.types import SampleSpec

REASONS = {"no_answer", "unparseable", "timeout", "crash", "memory", "forbidden", "exit", "output_limit"}


@pytest.mark.slow
def test_every_task_on_real_model(smol, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MARGINAL_DATA", str(data_dir))
    f = tmp_path / "toy.jsonl"
    f.write_text(json.dumps({"question": "What is 2 + 3?", "answer": 5}) + "\n")
    tasks = [load_task(n) for n in ("gsm8k", "math500", "gpqa-diamond", "humaneval", f"jsonl:{f}")]
    problems = [t.problems()[0] for t in tasks]
    priors = [t.bank()[1] for t in tasks]  # the step-by-step prior of each bank
    spec = SampleSpec(n=2, temperature=0.7, max_tokens=16, seed=1)
    outs = smol.generate([c.render(p.question) for c, p in zip(priors, problems)], spec)
    assert [len(o) for o in outs] == [2] * 5
    for task, problem, comps in zip(tasks, problems, outs):
        ex = extract_all(task, [(c.text, problem) for c in comps])
        assert len(ex) == 2
        for e in ex:
            assert (e.answer is None) != (e.error is None)
            if e.answer is not None:
                assert task.grade(e.answer, problem) in (True, False), (task.name, e)
            else:
                assert e.error.split(":")[0] in REASONS, (task.name, e)
