"""Replay on a pool still being generated: unsampled problems are left out, not scored 0."""

from marginal.policies import Fixed
from marginal.replay import replay
from marginal.store import Store
from marginal.types import Prior, Problem, Sample


def test_replay_leaves_out_problems_with_no_sample_yet(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r", {}, [Problem(f"p{i}", "q", "1") for i in range(4)], [Prior("a"), Prior("b")], "0")
    rows = [Sample(p, c, i, "1", "1", True, None) for p in ("p0", "p2") for c in ("a", "b") for i in range(2)]
    s.add_samples("r", rows)
    s.close()
    r = replay(tmp_path / "r.db", Fixed(2, 2), 4)
    assert r.credit == (1.0, 1.0) and r.used == (4, 4)
    assert r.accuracy == 1.0 and r.exhausted == 0 and r.mean_used == 4.0


# -- experiments/policies/evaluate.py on synthetic pools --------------------------------

import importlib.util  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("policies_evaluate", ROOT / "experiments/policies/evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _pool(path, n_problems=16, n_priors=8, m=32, seed=0):
    """Priors of mixed quality: gold "1" with a per-(problem, prior) share, else one of two wrong answers."""
    rng = np.random.default_rng(seed)
    s = Store(path)
    probs = [Problem(f"p{i}", "q", "1") for i in range(n_problems)]
    s.create_run("r", {"task": "toy", "model": "fake"}, probs, [Prior(f"c{c}") for c in range(n_priors)], "0")
    rows = []
    for p in probs:
        base = rng.uniform(0.2, 0.7)
        for c in range(n_priors):
            q = float(np.clip(base + rng.normal(0, 0.15), 0.05, 0.95))
            for i in range(m):
                a = str(rng.choice(["1", "2", "3"], p=[q, (1 - q) * 0.6, (1 - q) * 0.4]))
                rows.append(Sample(p.id, f"c{c}", i, a, a, a == "1", None))
    s.add_samples("r", rows)
    s.close()


def _truncate(src, dst, m):
    import shutil

    shutil.copy(src, dst)
    db = sqlite3.connect(dst)
    db.execute("DELETE FROM samples WHERE idx >= ?", (m,))
    db.commit()
    db.close()


def _entry(res, B, name):
    return next(e for e in res["budgets"][str(B)]["policies"] if e["name"] == name)


def test_evaluate_deep_pool_measures_every_goal(tmp_path):
    ev = _evaluate_module()
    _pool(tmp_path / "deep.db")
    res = ev.evaluate_pool(str(tmp_path / "deep.db"), [4, 8, 16, 32], [0.95], 4, 500, 0, 0.5)
    for B in (4, 8, 16, 32):
        rep = _entry(res, B, "repetition")
        assert rep["measurable"] and rep["live"]["exhausted"] == 0 and rep["expected"]["mean_used"] == B
        ad = _entry(res, B, "adaptive 0.95")
        assert ad["measurable"] and ad["expected"]["mean_used"] <= B
        g = res["budgets"][str(B)]["goals"]["adaptive 0.95"]
        assert g["best fixed (K*M = B)"]["holds"] in (True, False)
        best = _entry(res, B, "best fixed (K*M = B)")
        # hindsight best is the max over the K x M = B cells measured on the same problems
        cells = [e for e in res["budgets"][str(B)]["policies"] if e["kind"] in ("repetition", "diversity", "fixed")]
        assert best["expected"]["accuracy"] == max(e["expected"]["accuracy"] for e in cells)
    # repetition at equal samples uses the exact K = 1 curve (32 samples per prior here)
    g = res["budgets"]["16"]["goals"]["adaptive 0.95"]["repetition at equal samples"]
    assert g["holds"] in (True, False) and "exact K=1 grid" in g["how"]
    assert all(_entry(res, B, "planned")["fold0_matches_plan_api"] is True for B in (4, 8, 16, 32))


def test_evaluate_shallow_pool_bounds_contain_the_deep_value(tmp_path):
    """A pool cut to 6 samples per prior: what adaptive could not draw is bounded, and the bounds hold the truth."""
    ev = _evaluate_module()
    _pool(tmp_path / "deep.db", seed=3)
    _truncate(tmp_path / "deep.db", tmp_path / "shallow.db", 6)
    deep = ev.evaluate_pool(str(tmp_path / "deep.db"), [16, 32], [0.95], 1, 200, 0, 0.5)
    shallow = ev.evaluate_pool(str(tmp_path / "shallow.db"), [16, 32], [0.95], 1, 200, 0, 0.5)
    assert not _entry(shallow, 32, "repetition")["measurable"]
    n_unmeasurable = 0
    for B in (16, 32):
        d, s = _entry(deep, B, "adaptive 0.95"), _entry(shallow, B, "adaptive 0.95")
        if s["measurable"]:
            assert s["live"]["accuracy"] == d["live"]["accuracy"]
            continue
        n_unmeasurable += 1
        lo, hi = s["live"]["accuracy_bounds"]
        ulo, uhi = s["live"]["mean_used_bounds"]
        assert lo <= d["live"]["accuracy"] <= hi and ulo <= d["live"]["mean_used"] <= uhi
        assert s["live"]["exhausted"] > 0
        n = shallow["problems"]
        assert abs((hi - lo) - s["live"]["exhausted"] / n) < 1e-3  # an exhausted problem's credit spans [0, 1]
    assert n_unmeasurable > 0  # the shallow pool does run out at these budgets


def test_evaluate_is_deterministic(tmp_path):
    ev = _evaluate_module()
    _pool(tmp_path / "p.db", n_problems=6, m=6, seed=5)
    for out in ("a", "b"):
        ev.main(
            [str(tmp_path / "p.db"), "--out", str(tmp_path / out / "results.json"), "--orders", "3", "--boot", "200"]
        )
    assert (tmp_path / "a/results.json").read_text() == (tmp_path / "b/results.json").read_text()
    assert (tmp_path / "a/policies.png").stat().st_size > 10_000
    assert "| 4 | repetition | 1x4 |" in (tmp_path / "a/tables.md").read_text()


def test_evaluate_keeps_distinct_correct_answers_apart_as_a_vote_does(tmp_path):
    """Two answers graded correct ("a", "b"): load_pool's grid merges them into one vote, a real vote does not."""
    ev = _evaluate_module()
    s = Store(tmp_path / "g.db")
    s.create_run(
        "r",
        {"task": "toy", "model": "fake"},
        [Problem("p0", "q", "a"), Problem("p1", "q", "1")],
        [Prior("c0"), Prior("c1")],
        "0",
    )
    rows = []
    for c in ("c0", "c1"):
        for i, a in enumerate(["a", "a", "b", "c", "c", "x"]):  # merged: gold 3 vs c 2; apart: a 2 ties c 2
            rows.append(Sample("p0", c, i, a, a, a in ("a", "b"), None))
        rows += [Sample("p1", c, i, "1", "1", True, None) for i in range(6)]
    s.add_samples("r", rows)
    s.close()
    res = ev.evaluate_pool(str(tmp_path / "g.db"), [4], [0.95], 2, 200, 0, 0.5)
    assert res["several_correct_answers_problems"] == ["p0"]
    full = res["repetition_curve"][5]  # K = 1, M = 6: every stored sample of c0, one order only
    assert full["accuracy"] == 0.75  # p0 credit 1/2 (tie a/c), p1 credit 1; the merged grid would say 1.0
