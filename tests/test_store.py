import json
import sqlite3
import threading

import pytest

from marginal.errors import MarginalError
from marginal.store import Store
from marginal.types import Prior, Problem, Sample


def _sample(pid, prior, i, answer="1"):
    return Sample(
        pid,
        prior,
        i,
        f"text {i}",
        answer,
        answer == "1" if answer else None,
        None if answer else "no_answer",
        prompt_tokens=5,
        completion_tokens=3,
        seed=i,
    )


def test_roundtrip_and_no_duplicates(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r1", {"task": "t"}, [Problem("p1", "q?", "1")], [Prior("default")], "0")
    assert s.add_samples("r1", [_sample("p1", "default", i) for i in range(3)]) == 3
    assert s.add_samples("r1", [_sample("p1", "default", i, "2") for i in range(4)]) == 1  # 0..2 kept as they were
    got = s.samples("r1")
    assert [x.index for x in got] == [0, 1, 2, 3]
    assert [x.answer for x in got] == ["1", "1", "1", "2"]
    assert got[0] == _sample("p1", "default", 0)
    assert s.priors("r1") == [Prior("default")]
    assert s.problems("r1") == [Problem("p1", "q?", "1")]


def test_failed_sample_roundtrip(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r1", {}, [Problem("p1", "q", None)], [Prior("a")], "0")
    s.add_samples("r1", [_sample("p1", "a", 0, None)])
    (x,) = s.samples("r1")
    assert x.failed and x.error == "no_answer" and x.correct is None


def test_redacted_question_not_written(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r1", {}, [Problem("p1", "SECRET QUESTION", "B", meta={"redact": True})], [Prior("a")], "0")
    s.add_samples("r1", [Sample("p1", "a", 0, "The SECRET QUESTION asks... B", "B", True, None)])
    assert s.samples("r1")[0].text == "The SECRET QUESTION asks... B"
    with open(s.export("r1", tmp_path / "x.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    assert rows[0]["text"].startswith("zlib:")  # exports keep it compressed too
    s.close()
    assert b"SECRET QUESTION" not in (tmp_path / "r.db").read_bytes()
    assert b"SECRET QUESTION" not in (tmp_path / "r.db-wal").read_bytes() if (tmp_path / "r.db-wal").exists() else True


def test_export_jsonl_and_parquet(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r1", {}, [Problem("p1", "q", "1")], [Prior("a")], "0")
    s.add_samples("r1", [_sample("p1", "a", i) for i in range(2)])
    with open(s.export("r1", tmp_path / "x.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["index"] for r in rows] == [0, 1] and rows[0]["run_id"] == "r1"
    pq = pytest.importorskip("pyarrow.parquet")
    t = pq.read_table(s.export("r1", tmp_path / "x.parquet"))
    assert t.num_rows == 2 and t.column("answer").to_pylist() == ["1", "1"]
    with pytest.raises(MarginalError, match="jsonl or .parquet"):
        s.export("r1", tmp_path / "x.csv")


def test_unreadable_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MarginalError, match="not a marginal run database"):
        Store(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100
    with pytest.raises(MarginalError, match="no such run database"):
        Store(tmp_path / "missing.db", readonly=True)


def test_concurrent_reader_while_writing(tmp_path):
    path = tmp_path / "r.db"
    w = Store(path)
    w.create_run("r1", {}, [Problem("p1", "q", "1")], [Prior("a")], "0")
    seen, errors = [], []

    def read():
        r = Store(path, readonly=True)
        try:
            for _ in range(200):
                seen.append(r.count("r1"))
        except sqlite3.Error as e:  # pragma: no cover - the failure we test for
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    for i in range(200):
        w.add_samples("r1", [_sample("p1", "a", i)])
    t.join()
    assert not errors
    assert seen == sorted(seen)  # a reader sees whole batches, never a count going back
    assert w.count("r1") == 200


def test_add_problems_appends_after_the_stored_ones(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r", {"task": "t"}, [Problem("a", "qa")], [Prior("p")], "0")
    s.add_problems("r", [Problem("b", "qb"), Problem("c", "qc", "3")])
    s.add_problems("r", [Problem("a", "changed"), Problem("d", "qd")])  # a stored id is kept as it was
    assert [(p.id, p.question, p.answer) for p in s.problems("r")] == [
        ("a", "qa", None),
        ("b", "qb", None),
        ("c", "qc", "3"),
        ("d", "qd", None),
    ]
    s.close()
