"""`marginal run` end to end on the real bundled model: resume after SIGKILL and SIGTERM, bad input."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "src" / "marginal" / "data" / "demo.jsonl"
SMALL = ["--limit", "3", "--priors", "2", "--samples", "2", "--max-tokens", "24"]


def marginal(*args, cwd=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "marginal", *map(str, args)], capture_output=True, text=True, cwd=cwd, **kw
    )


def rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT problem_id, prior, idx, text, answer, seed FROM samples ORDER BY 1, 2, 3").fetchall()


def count(db):
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT count(*) FROM samples").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("full") / "full.db"
    r = marginal("run", f"jsonl:{DEMO}", *SMALL, "--out", db)
    assert r.returncode == 0, r.stderr
    return db


def test_run_stores_k_by_m_samples(full_run):
    got = rows(full_run)
    assert len(got) == 3 * 2 * 2
    assert {(p, c) for p, c, *_ in got} == {(f"demo/{i}", c) for i in range(3) for c in ("default", "step-by-step")}
    assert len({seed for *_, seed in got}) == 12


def test_rerun_generates_nothing_new(full_run, tmp_path):
    before = rows(full_run)
    r = marginal("run", f"jsonl:{DEMO}", *SMALL, "--out", full_run)
    assert r.returncode == 0, r.stderr
    assert rows(full_run) == before


def test_resume_after_sigkill(full_run, tmp_path):
    db = tmp_path / "killed.db"
    # Two slots: the 12 samples then finish in six rounds, not all in one decode step
    # (with 32 slots they could all commit between two polls and leave nothing to kill).
    args = [sys.executable, "-m", "marginal", "run", f"jsonl:{DEMO}", *SMALL, "--out", str(db), "--batch-samples", "2"]
    args += ["--slots", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while count(db) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = count(db)
    assert 4 <= partial < 12
    r = marginal("run", f"jsonl:{DEMO}", *SMALL, "--out", db, "--batch-samples", "2")
    assert r.returncode == 0, r.stderr
    got = rows(db)
    assert len(got) == len(set((p, c, i) for p, c, i, *_ in got)) == 12
    # Every sample keeps the seed it would have had. (Texts can differ from a run with
    # other batch sizes: llama.cpp's CPU kernels are not batch-invariant.)
    assert [(p, c, i, s) for p, c, i, _, _, s in got] == [(p, c, i, s) for p, c, i, _, _, s in rows(full_run)]


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path):
    """SIGTERM (a job scheduler, ``kill``) is Ctrl-C: exit 143 with the interrupted message, every
    committed sample kept, and the same command completes the rest with nothing twice."""
    db = tmp_path / "term.db"
    many = ["--limit", "3", "--priors", "2", "--samples", "8", "--max-tokens", "24", "--slots", "2"]
    args = [sys.executable, "-m", "marginal", "run", f"jsonl:{DEMO}", *many, "--out", str(db), "--batch-samples", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while count(db) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be terminated"
    at_term = count(db)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert b"stored samples are kept" in stderr
    assert at_term <= count(db) < 48
    r = marginal("run", f"jsonl:{DEMO}", *many, "--out", db)
    assert r.returncode == 0, r.stderr
    got = rows(db)
    assert len(got) == len(set((p, c, i) for p, c, i, *_ in got)) == 48


def test_same_command_reproduces_samples(full_run, tmp_path):
    db = tmp_path / "again.db"
    r = marginal("run", f"jsonl:{DEMO}", *SMALL, "--out", db)
    assert r.returncode == 0, r.stderr
    assert rows(db) == rows(full_run)


def test_growing_samples_adds_only_new_indices(full_run, tmp_path):
    db = tmp_path / "grow.db"
    db.write_bytes(full_run.read_bytes())
    r = marginal(
        "run", f"jsonl:{DEMO}", "--limit", "3", "--priors", "2", "--samples", "3", "--max-tokens", "24", "--out", db
    )
    assert r.returncode == 0, r.stderr
    got = rows(db)
    assert len(got) == 18
    old = {(p, c, i): t for p, c, i, t, _, _ in rows(full_run)}
    assert all(old[(p, c, i)] == t for p, c, i, t, _, _ in got if i < 2)


def bad(*args, cwd=None):
    r = marginal(*args, cwd=cwd)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:")
    return " ".join(r.stderr.split())


def test_bad_inputs(full_run, tmp_path):
    before = rows(full_run)
    assert "did you mean 'gsm8k'" in bad("run", "gsm8kk", "--out", tmp_path / "x.db")
    assert "did you mean 'smollm2-135m'" in bad(
        "run", f"jsonl:{DEMO}", "--model", "smollm2-13m", "--out", tmp_path / "x.db"
    )
    assert "step-by-step" in bad("run", f"jsonl:{DEMO}", "--priors", "default,step-by-stp", "--out", tmp_path / "x.db")
    assert "--budget must be a positive integer" in bad(
        "run", f"jsonl:{DEMO}", "--budget", "0", "--out", tmp_path / "x.db"
    )
    assert "--samples must be a positive integer" in bad(
        "run", f"jsonl:{DEMO}", "--samples", "-1", "--out", tmp_path / "x.db"
    )
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    assert f"{broken}:2" in bad("run", f"jsonl:{broken}", "--out", tmp_path / "x.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 64)
    assert "not a marginal run database" in bad("run", f"jsonl:{DEMO}", *SMALL, "--out", junk)
    assert junk.read_bytes() == b"not a database" * 64
    # Another configuration into the same --out is refused, naming what differs.
    msg = bad("run", f"jsonl:{DEMO}", *SMALL, "--temperature", "0.9", "--out", full_run)
    assert "different run" in msg and "temperature" in msg
    assert "did you mean 'adaptive'" in bad(
        "run", f"jsonl:{DEMO}", "--policy", "adaptiv", "--budget", "4", "--out", tmp_path / "y.db"
    )
    assert rows(full_run) == before


def test_resume_uses_stored_settings(full_run, tmp_path):
    db = tmp_path / "r.db"
    db.write_bytes(full_run.read_bytes())
    r = marginal("run", "ignored-task-name", "--resume", "--out", db)
    assert r.returncode == 0, r.stderr
    assert rows(db) == rows(full_run)


def test_export_and_models(full_run, tmp_path):
    r = marginal("export", full_run, tmp_path / "x.jsonl")
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 12
    r = marginal("models")
    assert r.returncode == 0 and "smollm2-135m" in r.stdout and "qwen2.5-coder-0.5b" in r.stdout


def test_demo_runs_offline_end_to_end(tmp_path):
    r = marginal("demo", "--model", "smollm2-135m", "--limit", "2", "--max-tokens", "8", "--out-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    assert count(tmp_path / "demo-smollm2-135m.db") == 2 * 4 * 2
    assert "regime" in r.stdout
    html = (tmp_path / "demo-smollm2-135m.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html[:200]


def test_save_plan_then_planned_policy_run(full_run, tmp_path):
    plan = tmp_path / "plan.json"
    r = marginal("analyze", full_run, "--budget", "4", "--save-plan", plan)
    assert r.returncode == 0, r.stderr
    import json

    d = json.loads(plan.read_text())
    assert d["task"] == f"jsonl:{DEMO}" and d["model"] == "smollm2-135m" and set(d["splits"]) == {"2", "4"}
    db = tmp_path / "planned.db"
    r = marginal(
        "run",
        f"jsonl:{DEMO}",
        "--policy",
        "planned",
        "--plan",
        plan,
        "--budget",
        "4",
        "--limit",
        "2",
        "--max-tokens",
        "16",
        "--out",
        db,
    )
    assert r.returncode == 0, r.stderr
    k, m = d["splits"]["4"]
    got = rows(db)
    assert len(got) == 2 * k * m
    with sqlite3.connect(db) as c:
        reasons = [x for (x,) in c.execute("SELECT reason FROM decisions")]
    assert any("fixed split" in x for x in reasons)
    # A plan made for another task is refused.
    other = tmp_path / "other.json"
    other.write_text(plan.read_text().replace(f"jsonl:{DEMO}", "gsm8k"))
    msg = bad(
        "run", f"jsonl:{DEMO}", "--policy", "planned", "--plan", other, "--budget", "4", "--out", tmp_path / "z.db"
    )
    assert "plan was made for task 'gsm8k'" in msg


def test_adaptive_policy_run_resumes_without_duplicates(tmp_path):
    db = tmp_path / "adaptive.db"
    args = [
        "run",
        f"jsonl:{DEMO}",
        "--policy",
        "adaptive",
        "--budget",
        "6",
        "--limit",
        "2",
        "--max-tokens",
        "16",
        "--out",
        db,
    ]
    r = marginal(*args)
    assert r.returncode == 0, r.stderr
    first, n_dec = rows(db), None
    with sqlite3.connect(db) as c:
        n_dec = c.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert 0 < len(first) <= 12 and n_dec >= 2
    r = marginal(*args)  # replays the stored decisions, adds nothing
    assert r.returncode == 0, r.stderr
    assert rows(db) == first
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM decisions").fetchone()[0] == n_dec


def test_subset_seed_picks_a_seeded_random_subset_and_resume_keeps_it(tmp_path):
    import numpy as np

    db = tmp_path / "subset.db"
    args = ["--priors", "1", "--samples", "1", "--max-tokens", "4", "--limit", "3", "--subset-seed", "7"]
    r = marginal("run", f"jsonl:{DEMO}", *args, "--out", db)
    assert r.returncode == 0, r.stderr
    want = [f"demo/{i}" for i in sorted(np.random.default_rng(7).permutation(20)[:3])]
    with sqlite3.connect(db) as c:
        stored = [i for (i,) in c.execute("SELECT problem_id FROM problems ORDER BY position")]
    assert stored == want and want != ["demo/0", "demo/1", "demo/2"]
    assert sorted({p for p, *_ in rows(db)}) == sorted(want)
    r = marginal("run", "ignored", "--resume", "--samples", "2", "--out", db)
    assert r.returncode == 0, r.stderr
    assert len(rows(db)) == 6 and sorted({p for p, *_ in rows(db)}) == sorted(want)
    assert "give --limit" in bad("run", f"jsonl:{DEMO}", "--subset-seed", "1", "--out", tmp_path / "y.db")


def test_replay_grow_generates_what_the_policy_lacks_then_nothing(full_run, tmp_path):
    db = tmp_path / "grow.db"
    db.write_bytes(full_run.read_bytes())  # 3 problems x 2 priors x 2 samples, from the bundled model
    before = rows(db)
    second = sorted({c for _, c, *_ in before})[1]
    args = ["replay", db, "--budgets", "4", "--policies", "repetition", "--priors", second]
    r = marginal(*args, env={"COLUMNS": "200", **os.environ})
    assert r.returncode == 0 and "ran out of samples" in r.stdout, r.stderr  # 2 stored, repetition wants 4
    r = marginal(*args, "--grow", "--threads", "1", "--slots", "4", env={"COLUMNS": "200", **os.environ})
    assert r.returncode == 0, r.stderr
    assert "repetition at B = 4: 6 samples generated" in r.stdout and "ran out of samples" not in r.stdout
    after = rows(db)
    assert set(before) <= set(after) and len(after) == len(before) + 6
    assert {i for _, c, i, *_ in after if c == second} == {0, 1, 2, 3}  # only the sub-bank's prior grew
    r = marginal(*args, "--grow", "--threads", "1", env={"COLUMNS": "200", **os.environ})
    assert r.returncode == 0 and "0 samples generated" in r.stdout and rows(db) == after
