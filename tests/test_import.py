"""`marginal import`: JSONL samples from elsewhere become a native pool (round trip against a brute-force count)."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from marginal.analysis import accuracy_grid, analyze, load_pool
from marginal.errors import MarginalError
from marginal.importer import import_jsonl
from marginal.policies import Fixed
from marginal.replay import replay
from marginal.store import Store


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def random_rows(rng, n_q=6, priors=("default", "teacher", "checker"), n=4, kind="answers"):
    rows = []
    for q in range(n_q):
        gold = int(rng.integers(1, 4))
        for c in priors:
            vals = [None if rng.random() < 0.1 else int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, n + 1)))]
            if kind == "answers":
                rows.append({"question": f"q{q}?", "answer": gold, "prior": c, "answers": vals})
            else:
                rows.append(
                    {
                        "question": f"q{q}?",
                        "answer": gold,
                        "prior": c,
                        "samples": [None if v is None else f"Some working... the answer is {v}." for v in vals],
                    }
                )
    return rows


def brute_credit(values, gold, k, m):
    """Expected vote credit of the first k priors x m samples, by enumerating every subsample."""
    from itertools import product

    per = [list(combinations(v, min(m, len(v)))) for v in values[:k]]
    tot = 0.0
    for combo in product(*per):
        votes = {}
        for draw in combo:
            for x in draw:
                if x is not None:
                    votes[x] = votes.get(x, 0) + 1
        if votes:
            top = max(votes.values())
            tied = [a for a, c in votes.items() if c == top]
            tot += (gold in tied) / len(tied)
    return tot / max(1, len(list(product(*per))))


@pytest.mark.parametrize("kind", ["answers", "samples"])
def test_round_trip_grid_equals_brute_force(tmp_path, kind):
    rows = random_rows(np.random.default_rng(0), kind=kind)
    r = import_jsonl(write(tmp_path / "in.jsonl", rows), "jsonl", out=tmp_path / "pool.db")
    assert r.problems == 6 and r.priors == ("default", "teacher", "checker")
    pool = load_pool(tmp_path / "pool.db")
    assert pool.problems == tuple(f"in/{i}" for i in range(6)) and pool.priors == r.priors
    g = accuracy_grid(pool, 6, method="exact")
    raw = [json.loads(json.dumps(x)) for x in random_rows(np.random.default_rng(0), kind="answers")]
    for i in range(6):
        vals = [[None if v is None else str(v) for v in row["answers"]] for row in raw[3 * i : 3 * i + 3]]
        gold = str(raw[3 * i]["answer"])
        for j, (k, m) in enumerate(g.cells):
            assert g.acc[i, j] == pytest.approx(brute_credit(vals, gold, k, m), abs=1e-12), (i, k, m)
    # K = 1, M = 1 is the plain share of correct samples: a direct count
    n_right = [
        sum(str(v) == str(raw[3 * i]["answer"]) for v in raw[3 * i]["answers"]) / len(raw[3 * i]["answers"])
        for i in range(6)
    ]
    np.testing.assert_allclose(g.acc[:, g.index(1, 1)], n_right)


def test_answers_and_samples_rows_give_the_same_pool(tmp_path):
    a = import_jsonl(
        write(tmp_path / "a.jsonl", random_rows(np.random.default_rng(1), kind="answers")),
        "jsonl",
        out=tmp_path / "a.db",
    )
    s = import_jsonl(
        write(tmp_path / "s.jsonl", random_rows(np.random.default_rng(1), kind="samples")),
        "jsonl",
        out=tmp_path / "s.db",
    )
    pa, ps = load_pool(a.path), load_pool(s.path)
    np.testing.assert_array_equal(pa.answers, ps.answers)
    np.testing.assert_array_equal(pa.gold, ps.gold)
    assert a.failed == s.failed > 0 and a.graded == s.graded


def test_texts_are_extracted_graded_and_work_with_analyze_replay_export(tmp_path):
    rows = [
        {"question": "What is 2+2?", "answer": "4", "samples": ["It is 4.", "The answer is 5", "no idea", None]},
        {"question": "What is 2+2?", "prior": "teacher", "answers": ["4", 4, None]},
        "",
        {"question": "What is 3*3?", "answer": 9, "prior": "teacher", "samples": ["#### 9", "9", "#### 8"]},
        {"question": "What is 3*3?", "samples": ["so 9", "10"]},
    ]
    r = import_jsonl(
        write(tmp_path / "in.jsonl", rows), "jsonl", grader="numeric", out=tmp_path / "p.db", model="api-x"
    )
    assert (r.samples, r.failed, r.problems) == (12, 3, 2)
    st = Store(tmp_path / "p.db", readonly=True)
    rid = st.only_run()
    cfg = st.run_config(rid)
    got = {(s.problem_id, s.prior, s.index): (s.answer, s.correct, s.error) for s in st.samples(rid)}
    st.close()
    assert cfg["task"] == "jsonl[numeric]" and cfg["model"] == "api-x"
    assert got["in/0", "default", 0] == ("4", True, None)
    assert got["in/0", "default", 1] == ("5", False, None)
    assert got["in/0", "default", 2][0] is None and got["in/0", "default", 2][2]  # no number: failed, with a reason
    assert got["in/0", "default", 3][:2] == (None, None) and "null" in got["in/0", "default", 3][2]
    assert got["in/0", "teacher", 1] == ("4", True, None)
    assert got["in/1", "teacher", 2] == ("8", False, None)
    a = analyze(load_pool(tmp_path / "p.db"), 4, n_boot=100)
    assert a.grid.at(1, 1) == pytest.approx((1 / 4 + 1 / 2) / 2)  # the first prior, default: 1 of 4, 1 of 2 right
    rp = replay(tmp_path / "p.db", Fixed(1, 1), 1)
    assert rp.credit == (1.0, 1.0)  # sample 0 of the first prior: "4" and "so 9"
    Store(tmp_path / "p.db", readonly=True).export(rid, tmp_path / "out.jsonl")
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 12


BAD = [
    ('{"question": "q", "samples": ["1"]', 1, "malformed JSON"),
    ("[1, 2]", 1, "expected a JSON object"),
    ({"answer": "1", "samples": ["1"]}, 1, "field 'question'"),
    ({"question": "q", "answer": "1"}, 1, "exactly one of the fields 'samples'"),
    ({"question": "q", "samples": ["1"], "answers": ["1"]}, 1, "got samples and answers"),
    ({"question": "q", "samples": "1"}, 1, "field 'samples' must be a non-empty list"),
    ({"question": "q", "samples": []}, 1, "field 'samples' must be a non-empty list"),
    ({"question": "q", "samples": ["1", 2]}, 1, "field 'samples' item 1 must be a string"),
    ({"question": "q", "answers": ["1", [2]]}, 1, "field 'answers item 1' must be a string or number"),
    ({"question": "q", "answer": {"x": 1}, "answers": ["1"]}, 1, "field 'answer' must be"),
    ({"question": "q", "prior": " x", "answers": ["1"]}, 1, "field 'prior'"),
    ({"question": "q", "sample": ["1"]}, 1, "unknown field 'sample' \\(did you mean 'samples'\\?\\)"),
]


@pytest.mark.parametrize("bad, line, match", BAD)
def test_a_bad_row_names_its_line_and_field_and_writes_nothing(tmp_path, bad, line, match):
    good = {"question": "ok", "answer": "1", "answers": ["1"]}
    path = write(tmp_path / "in.jsonl", [good, "", bad, good | {"prior": "b"}])
    with pytest.raises(MarginalError, match=rf"in\.jsonl:{line + 2}: .*{match}"):
        import_jsonl(path, "jsonl", out=tmp_path / "p.db")
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize(
    "rows, line, match",
    [
        (
            [
                {"question": "q", "answer": "1", "answers": ["1"]},
                {"question": "q", "answer": "2", "prior": "b", "answers": ["1"]},
            ],
            2,
            "field 'answer' is '2', but line 1 gives '1'",
        ),
        (
            [{"question": "q", "answers": ["1"]}, {"question": "q", "answers": ["2"]}],
            2,
            "field 'prior': 'default' is given",
        ),
        (
            [
                {"id": "a", "question": "q", "answers": ["1"]},
                {"id": "a", "question": "r", "prior": "b", "answers": ["1"]},
            ],
            2,
            "field 'question' differs from line 1",
        ),
        (
            [{"question": "q", "answers": ["1"]}, {"id": "in/0", "question": "r", "answers": ["1"]}],
            2,
            "field 'id': 'in/0'",
        ),
    ],
)
def test_rows_of_one_question_must_agree(tmp_path, rows, line, match):
    with pytest.raises(MarginalError, match=rf"in\.jsonl:{line}: {match}"):
        import_jsonl(write(tmp_path / "in.jsonl", rows), "jsonl", out=tmp_path / "p.db")
    assert not (tmp_path / "p.db").exists()


def test_refuses_a_file_that_holds_a_run_and_bad_task_options(tmp_path):
    path = write(tmp_path / "in.jsonl", [{"question": "q", "answer": "1", "answers": ["1"]}])
    import_jsonl(path, "jsonl", out=tmp_path / "p.db")
    before = (tmp_path / "p.db").read_bytes()
    with pytest.raises(MarginalError, match="already holds a run"):
        import_jsonl(path, "jsonl", out=tmp_path / "p.db")
    assert (tmp_path / "p.db").read_bytes() == before
    with pytest.raises(MarginalError, match="unknown grader 'numerc'.*did you mean 'numeric'"):
        import_jsonl(path, "jsonl", grader="numerc", out=tmp_path / "q.db")
    with pytest.raises(MarginalError, match="--grader applies to the jsonl task only"):
        import_jsonl(path, "gsm8k", grader="exact", out=tmp_path / "q.db")
    with pytest.raises(MarginalError, match="unknown task 'gsm9k'"):
        import_jsonl(path, "gsm9k", out=tmp_path / "q.db")
    with pytest.raises(MarginalError, match="cannot read .*nope.jsonl"):
        import_jsonl(tmp_path / "nope.jsonl", "jsonl", out=tmp_path / "q.db")
    assert not (tmp_path / "q.db").exists()


def test_exact_grader_and_label_free_rows(tmp_path):
    rows = [{"question": "Colour of the sky?", "samples": ["Blue.", "blue", "Grey"]}]
    import_jsonl(write(tmp_path / "in.jsonl", rows), "jsonl", grader="exact", out=tmp_path / "p.db")
    pool = load_pool(tmp_path / "p.db")
    assert pool.label_free and pool.answers[0, 0].tolist()[:2] == [0, 0]  # "Blue." and "blue" vote together


def test_gsm8k_task_takes_id_and_reference_from_the_dataset(tmp_path, data_dir):
    from marginal.tasks import load_task

    p0 = load_task("gsm8k").problems()[0]
    rows = [{"question": p0.question, "samples": [f"The answer is {p0.answer}.", "The answer is 1."]}]
    import_jsonl(write(tmp_path / "in.jsonl", rows), "gsm8k", out=tmp_path / "p.db")
    st = Store(tmp_path / "p.db", readonly=True)
    rid = st.only_run()
    assert [p.id for p in st.problems(rid)] == [p0.id] and st.problems(rid)[0].answer == p0.answer
    assert [s.correct for s in st.samples(rid)] == [True, False]
    st.close()


def test_import_command_function(tmp_path):
    from typer.testing import CliRunner

    from marginal.cli import app

    path = write(tmp_path / "in.jsonl", [{"question": "q", "answer": "1", "answers": ["1", "2"]}])
    res = CliRunner().invoke(app, ["import", str(path), "--task", "jsonl", "--out", str(tmp_path / "p.db")])
    assert res.exit_code == 0, res.output
    assert "imported 2 samples" in res.output and load_pool(tmp_path / "p.db").n_slots == 2
    bad = write(tmp_path / "bad.jsonl", [{"question": "q"}])
    res = CliRunner().invoke(app, ["import", str(bad), "--task", "jsonl", "--out", str(tmp_path / "b.db")])
    assert isinstance(res.exception, MarginalError) and "bad.jsonl:1" in str(res.exception)


def test_code_rows_run_in_the_sandbox_and_vote_by_behaviour(tmp_path):
    row = {
        "question": 'def add(a, b):\n    """Add. >>> add(1, 2)\n    3\n    """\n',
        "entry_point": "add",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 5) == 5\n",
        "samples": [
            "```python\ndef add(a, b):\n    return a + b\n```",
            "```python\ndef add(a, b):\n    return b + a\n```",
            "```python\ndef add(a, b):\n    return a - b\n```",
        ],
    }
    r = import_jsonl(write(tmp_path / "in.jsonl", [row]), "jsonl", grader="code", out=tmp_path / "p.db")
    st = Store(tmp_path / "p.db", readonly=True)
    got = st.samples(st.only_run())
    st.close()
    assert [s.correct for s in got] == [True, True, False] and got[0].answer == got[1].answer != got[2].answer
    assert r.graded == 3
    no_test = {k: v for k, v in row.items() if k != "test"}
    with pytest.raises(MarginalError, match=r"in2\.jsonl:1: --grader code needs the field 'test'"):
        import_jsonl(write(tmp_path / "in2.jsonl", [no_test]), "jsonl", grader="code", out=tmp_path / "q.db")
