"""Sub-banks and bank selection from the command line (analyze, report, replay), plans that
name their priors, and `--policy planned` on them (no model needed)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from marginal.analysis import analyze, load_pool, plan, select_bank, sub_bank
from marginal.analysis.subbank import covered, greedy_bank
from marginal.config import PolicySettings, RunConfig, TaskSource, build_plan, make_run_policy
from marginal.errors import MarginalError
from marginal.policies import Fixed, SplitPlan, make_policy
from marginal.replay import replay
from marginal.store import Store
from marginal.types import Prior, Problem, Sample

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "marginal" / "data" / "demo.jsonl"
sys.path.insert(0, str(ROOT / "tests"))
from test_cli import bad, marginal  # noqa: E402

PRIORS = ("default", "step-by-step", "terse", "teacher")


def build_pool(path: Path, n_problems: int = 24, seed: int = 0) -> Path:
    """A stored run that names its task and model (as `marginal run` writes), 4 priors x 6 samples."""
    rng = np.random.default_rng(seed)
    st = Store(path)
    problems = [Problem(f"q{i}", f"what is {i}+{i}?", str(2 * i)) for i in range(n_problems)]
    config = {"task": f"jsonl:{DEMO}", "model": "smollm2-135m", "spec": {"seed": 0}}
    st.create_run("run1", config, problems, [Prior(n) for n in PRIORS], "test")
    skill = [0.3, 0.6, 0.2, 0.5]
    rows = []
    for i, p in enumerate(problems):
        for c, name in enumerate(PRIORS):
            for j in range(6):
                ok = rng.random() < skill[c]
                ans = str(2 * i) if ok else str(2 * i + int(rng.integers(1, 4)))
                rows.append(Sample(p.id, name, j, f"so {ans}", ans, ok, None))
    st.add_samples("run1", rows)
    st.close()
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_pool(tmp_path_factory.mktemp("sub") / "pool.db")


def ok(*args):
    r = marginal(*args)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


def test_analyze_priors_is_the_sub_bank_in_order(db, tmp_path):
    out = tmp_path / "a.json"
    text = ok("analyze", db, "--priors", "teacher,default", "-B", "8", "--json", out)
    d = json.loads(out.read_text())
    ref = analyze(load_pool(db), 8, priors=["teacher", "default"]).to_dict()
    assert d["priors"] == ["teacher", "default"]
    assert d["grid"]["accuracy"] == ref["grid"]["accuracy"] and d["grid"]["cells"] == ref["grid"]["cells"]
    assert "largest Monte Carlo standard error: 0.00 points (every cell exact)" in text


def test_bad_prior_names_are_one_line_and_exit_2(db):
    assert "did you mean 'teacher'" in bad("analyze", db, "--priors", "teachr")
    assert "named twice" in bad("analyze", db, "--priors", "terse,terse")
    assert "did you mean 'terse'" in bad("replay", db, "--priors", "default,tersee", "--budgets", "4")
    assert "did you mean 'default'" in bad("analyze", db, "--select-bank", "2", "--priors", "terse,defalt")


def test_report_priors(db, tmp_path):
    html = tmp_path / "r.html"
    ok("report", db, "--priors", "terse,step-by-step", "-B", "8", "--html", html)
    page = html.read_text()
    assert "24 x 2 x 6" in page and "largest Monte Carlo standard error: 0.00 points" in page


def test_replay_priors_equals_the_library_sub_bank(db):
    text = ok("replay", db, "--priors", "terse,teacher", "--budgets", "4", "--policies", "repetition")
    r = replay(db, Fixed(1, 4, "repetition"), 4, priors=["terse", "teacher"])
    row = next(line for line in text.splitlines() if "repetition" in line)
    assert f"{100 * r.accuracy:.1f}" in row


def test_select_bank_cli_equals_the_library(db, tmp_path):
    out = tmp_path / "s.json"
    text = ok("analyze", db, "--select-bank", "2", "-B", "6", "--seed", "1", "--json", out)
    d = json.loads(out.read_text())["select_bank"]
    ref = select_bank(load_pool(db), 2, 6, seed=1)
    assert [a["name"] for a in d["arms"]] == ["selected", "first-k", "all"]
    for got, want in zip(d["arms"], ref.arms):
        assert got["priors"] == [list(b) for b in want.priors] and got["pooled"] == want.pooled
        assert got["ci"] == list(want.ci) and got["split"] == [list(s) for s in want.split]
    assert [x["pooled"] for x in d["diffs"]] == [x.pooled for x in ref.diffs]
    assert "selected - first-k" in text and "largest Monte Carlo standard error" in text


@pytest.mark.parametrize(
    "args, match",
    [
        (("--select-bank", "5"), "from 1 to the pool's 4 priors, got 5"),
        (("--select-bank", "0"), "from 1 to the pool's 4 priors, got 0"),
        (("--select-bank", "3", "--priors", "terse,teacher"), "from 1 to the pool's 2 priors, got 3"),
        (("--select-bank", "3", "-B", "2"), "choose K <= 2"),
    ],
)
def test_select_bank_refuses_bad_k(db, args, match):
    assert match in bad("analyze", db, *args)


def test_select_bank_save_plan_then_planned_replay(db, tmp_path):
    path = tmp_path / "plan.json"
    ok("analyze", db, "--select-bank", "2", "-B", "8", "--save-plan", path)
    p = SplitPlan.load(path)
    pool = load_pool(db)
    lab = covered(pool, "test")
    chosen = greedy_bank(lab, 2, 8, np.arange(lab.n_problems))
    assert p.priors == chosen and (p.task, p.model) == (f"jsonl:{DEMO}", "smollm2-135m")
    sub = sub_bank(lab, chosen)
    assert p.splits == {b: plan(sub, b, split=0.5, seed=0).choice for b in (2, 4, 8)}
    # planned on the stored pool: the plan's first K priors by name, as a hand vote over them
    text = ok("replay", db, "--policies", "planned", "--plan", path, "--budgets", "4")
    k, m = p.splits[4]
    want = []
    for i in range(lab.n_problems):
        votes = Counter(a for c in chosen[:k] for a in _stored(db, f"q{i}", c)[:m])
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v == top]
        want.append((str(2 * i) in tied) / len(tied))
    row = next(line for line in text.splitlines() if "planned" in line)
    assert f"{100 * np.mean(want):.1f}" in row


def _stored(db, problem, prior):
    st = Store(db, readonly=True)
    try:
        rows = [s for s in st.samples("run1") if s.problem_id == problem and s.prior == prior]
    finally:
        st.close()
    return [s.answer for s in sorted(rows, key=lambda s: s.index)]


def test_save_plan_on_a_sub_bank_names_its_priors(db, tmp_path):
    path = tmp_path / "p.json"
    ok("analyze", db, "--priors", "teacher,terse", "-B", "4", "--save-plan", path)
    assert SplitPlan.load(path).priors == ("teacher", "terse")
    ok("analyze", db, "-B", "4", "--save-plan", path)
    assert SplitPlan.load(path).priors is None and "priors" not in json.loads(path.read_text())


# -- plans that name their priors ------------------------------------------------------
def test_plan_with_priors_round_trips_and_picks_them_by_name(tmp_path):
    p = SplitPlan("t", "m", {4: (2, 2), 8: (1, 8)}, ("c", "a"))
    p.save(tmp_path / "p.json")
    back = SplitPlan.load(tmp_path / "p.json")
    assert back == p
    pol = back.policy(4, ["a", "b", "c"])
    assert pol == Fixed(2, 2, "planned", (2, 0))
    assert pol.decide([[], [], []], 4).requests == ((2, 2), (0, 2))
    assert back.policy(9, ["x", "c"]).priors == (1,)
    with pytest.raises(MarginalError, match="give the bank's prior names"):
        back.policy(4)
    with pytest.raises(MarginalError, match="unknown prior in the bank 'a'"):
        back.policy(4, ["b", "c"])
    assert make_policy("planned", 4, 3, plan=back, names=["a", "b", "c"]) == pol
    (tmp_path / "bad.json").write_text('{"task": "t", "model": "m", "splits": {"4": [1, 4]}, "priors": "a,b"}')
    with pytest.raises(MarginalError, match="not a plan file"):
        SplitPlan.load(tmp_path / "bad.json")


def test_a_plan_without_priors_keeps_bank_order():
    p = SplitPlan("t", "m", {4: (2, 2)})
    assert p.policy(4) == Fixed(2, 2, "planned") and p.policy(4, ["x", "y"]).priors is None


def test_fixed_with_priors_samples_only_those():
    f = Fixed(2, 3, priors=(3, 1))
    assert f.decide([[], [], [], []], 6).requests == ((3, 3), (1, 3))
    assert f.decide([[], ["1"] * 3, [], ["2"] * 3], 6).stop
    with pytest.raises(MarginalError, match="needs 4 priors, the bank has 2"):
        f.decide([[], []], 6)
    with pytest.raises(MarginalError, match="names 1 priors"):
        Fixed(2, 3, priors=(1,))


def test_run_policy_resolves_the_plan_priors_in_the_run_bank(tmp_path):
    path = tmp_path / "p.json"
    cfg = RunConfig(TaskSource(f"jsonl:{DEMO}"), policy=PolicySettings("planned", 4, plan_file=path))
    _, run_plan = build_plan(cfg)
    names = [c.name for c in run_plan.priors]
    SplitPlan(f"jsonl:{DEMO}", "smollm2-135m", {4: (2, 2)}, (names[-1], names[0])).save(path)
    pol = make_run_policy(cfg, run_plan)
    assert pol == Fixed(2, 2, "planned", (len(names) - 1, 0))


def test_analyze_prints_the_largest_monte_carlo_se(db):
    text = ok("analyze", db, "-B", "8", "--method", "mc")
    line = next(x for x in text.splitlines() if x.startswith("largest Monte Carlo standard error:"))
    se = float(line.split(":")[1].split()[0])
    g = analyze(load_pool(db), 8, method="mc")
    assert 0 < se <= 0.07 and se == round(100 * max(g.grid.se.max(), g.grid_random.se.max()), 2)
