"""Policies replayed on a stored pool equal a brute-force hand replay."""

from collections import Counter

import numpy as np

from marginal.policies import Adaptive, Fixed
from marginal.replay import replay
from marginal.store import Store
from marginal.types import Prior, Problem, Sample

PRIORS = ["a", "b", "c", "d"]


def make_pool(path, rng, n_problems=12, m=6):
    s = Store(path)
    probs = [Problem(f"p{i}", "q", "1") for i in range(n_problems)]
    s.create_run("r", {}, probs, [Prior(c) for c in PRIORS], "0")
    rows = []
    for p in probs:
        for c in PRIORS:
            for i in range(m):
                a = str(rng.choice(["1", "2", "3"], p=[0.5, 0.3, 0.2]))
                rows.append(Sample(p.id, c, i, a, a, a == "1", None))
    s.add_samples("r", rows)
    s.close()
    return rows


def test_fixed_replay_equals_hand_vote(tmp_path):
    rows = make_pool(tmp_path / "r.db", np.random.default_rng(0))
    r = replay(tmp_path / "r.db", Fixed(2, 3), 6)
    want = []
    for i in range(12):
        votes = Counter(s.answer for s in rows if s.problem_id == f"p{i}" and s.prior in ("a", "b") and s.index < 3)
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v == top]
        want.append(("1" in tied) / len(tied))
    assert list(r.credit) == want and r.used == (6,) * 12 and r.exhausted == 0
    assert r.ci[0] <= r.accuracy <= r.ci[1]


def test_adaptive_replay_uses_at_most_budget_and_flags_exhaustion(tmp_path):
    make_pool(tmp_path / "r.db", np.random.default_rng(1))
    r = replay(tmp_path / "r.db", Adaptive(), 16)
    assert all(u <= 16 for u in r.used) and 0 <= r.accuracy <= 1
    big = replay(tmp_path / "r.db", Fixed(4, 8), 32)  # the pool has 6 per prior
    assert big.exhausted == 12


def test_replay_cli(tmp_path):
    import subprocess
    import sys

    make_pool(tmp_path / "r.db", np.random.default_rng(2))
    r = subprocess.run(
        [sys.executable, "-m", "marginal", "replay", str(tmp_path / "r.db"), "--budgets", "4,8"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", **__import__("os").environ},
    )
    assert r.returncode == 0, r.stderr
    assert "adaptive" in r.stdout and "diversity" in r.stdout
    env = {"COLUMNS": "200", **__import__("os").environ}
    for b, short in (("4", False), ("8", True)):  # 6 samples per prior: enough for repetition at B = 4, not 8
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "marginal",
                "replay",
                str(tmp_path / "r.db"),
                "--budgets",
                b,
                "--policies",
                "repetition",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        assert r.returncode == 0 and ("†" in r.stdout) == short and ("ran out of samples" in r.stdout) == short
    r = subprocess.run(
        [sys.executable, "-m", "marginal", "replay", str(tmp_path / "r.db"), "--budgets", "4,x"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--budgets expects" in r.stderr


def test_partial_pool_analyses_only_sampled_problems(tmp_path):
    from marginal.analysis import load_pool

    s = Store(tmp_path / "r.db")
    s.create_run("r", {}, [Problem(f"p{i}", "q", "1") for i in range(3)], [Prior("a")], "0")
    s.add_samples("r", [Sample("p1", "a", i, "1", "1", True, None) for i in range(2)])
    s.close()
    pool = load_pool(tmp_path / "r.db")
    assert pool.problems == ("p1",)
