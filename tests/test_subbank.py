"""Sub-banks and greedy bank selection against brute-force references on small pools."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from marginal.analysis import analyze, brute_force_accuracy, pool_from_lists, select_bank, sub_bank
from marginal.analysis.subbank import greedy_bank, pick_priors
from marginal.analysis.weights import split_problems
from marginal.errors import MarginalError
from marginal.policies import Fixed
from marginal.replay import replay
from marginal.store import Store
from marginal.types import Prior, Problem, Sample


def lists(rng, N=8, P=4, n=3, A=3, fail=0.1):
    ans = [
        [[None if rng.random() < fail else int(rng.integers(0, A)) for _ in range(n)] for _ in range(P)]
        for _ in range(N)
    ]
    gold = [int(rng.integers(0, A)) for _ in range(N)]
    return ans, gold


def test_sub_bank_is_the_pool_of_the_named_priors_in_order():
    rng = np.random.default_rng(0)
    ans, gold = lists(rng, P=5)
    names = ["p0", "p1", "p2", "p3", "p4"]
    pool = pool_from_lists(ans, gold, names)
    pick = ["p3", "p0", "p4"]
    sub = sub_bank(pool, pick)
    ref = pool_from_lists([[row[names.index(c)] for c in pick] for row in ans], gold, pick)
    assert sub.priors == tuple(pick) and sub.problems == pool.problems
    for k, m in [(1, 2), (2, 3), (3, 1), (3, 3)]:
        np.testing.assert_allclose(brute_force_accuracy(sub, k, m), brute_force_accuracy(ref, k, m), atol=1e-12)
    assert sub_bank(pool, "p3, p0,p4").priors == tuple(pick)  # a comma-separated string works too


def test_sub_bank_trims_slots_and_leaves_out_problems_it_has_no_sample_of():
    pool = pool_from_lists([[["a", "b", "a"], ["a"]], [[], ["b"]]], ["a", "b"], ["long", "short"])
    s = sub_bank(pool, ["short"])
    assert s.n_slots == 1 and s.n_problems == 2
    s2 = sub_bank(pool, ["long"])
    assert s2.n_problems == 1 and s2.problems == ("0",)  # problem 1 has no sample under "long"


@pytest.mark.parametrize(
    "names, match",
    [
        (["p0", "p9x"], "unknown prior in run .* 'p9x'"),
        (["teachr"], "did you mean 'teacher'"),
        (["p0", "p0"], "named twice"),
        ([], "at least one prior"),
    ],
)
def test_sub_bank_refuses_bad_names(names, match):
    pool = pool_from_lists([[["1"], ["2"], ["1"]]], ["1"], ["p0", "p1", "teacher"])
    with pytest.raises(MarginalError, match=match):
        sub_bank(pool, names)


def test_analyze_accepts_a_sub_bank():
    rng = np.random.default_rng(1)
    ans, gold = lists(rng, N=10, P=4)
    pool = pool_from_lists(ans, gold, ["a", "b", "c", "d"])
    a = analyze(pool, 4, priors=["d", "b"], n_boot=200)
    ref = analyze(sub_bank(pool, ["d", "b"]), 4, n_boot=200)
    assert a.pool.priors == ("d", "b")
    np.testing.assert_allclose(a.grid.mean, ref.grid.mean)
    assert a.drift.lam == ref.drift.lam
    np.testing.assert_allclose(a.grid.acc[:, a.grid.index(2, 1)], brute_force_accuracy(ref.pool, 2, 1), atol=1e-12)
    with pytest.raises(MarginalError, match="did you mean 'd'"):
        analyze(pool, 4, priors=["dd"])


def test_replay_on_a_sub_bank_equals_a_hand_vote(tmp_path):
    rng = np.random.default_rng(2)
    s = Store(tmp_path / "r.db")
    probs = [Problem(f"p{i}", "q", "1") for i in range(10)]
    s.create_run("r", {}, probs, [Prior(c) for c in "abcd"], "0")
    rows = [
        Sample(p.id, c, i, a, a, a == "1", None)
        for p in probs
        for c in "abcd"
        for i in range(4)
        for a in [str(rng.choice(["1", "2", "3"]))]
    ]
    s.add_samples("r", rows)
    s.close()
    r = replay(tmp_path / "r.db", Fixed(1, 3), 3, priors=["c", "a"])  # K = 1: the sub-bank's first prior, c
    want = []
    for p in probs:
        votes = Counter(x.answer for x in rows if x.problem_id == p.id and x.prior == "c" and x.index < 3)
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v == top]
        want.append(("1" in tied) / len(tied))
    assert list(r.credit) == want
    with pytest.raises(MarginalError, match="unknown prior .* 'e'"):
        replay(tmp_path / "r.db", Fixed(1, 3), 3, priors=["e"])


def test_pick_priors_positions():
    assert pick_priors(["c", "a"], ["a", "b", "c"]) == (2, 0)


# -- greedy selection ---------------------------------------------------------------
def brute_greedy(pool, k, budget, rows):
    """The greedy criterion, recomputed by enumerating draws (brute_force_accuracy)."""
    chosen, best = [], -np.inf
    for j in range(1, k + 1):
        cand = []
        for c, name in enumerate(pool.priors):
            if name in chosen:
                continue
            sub = sub_bank(pool, chosen + [name])
            new = max(brute_force_accuracy(sub, j, m)[rows].mean() for m in range(1, min(sub.n_slots, budget // j) + 1))
            cand.append((round(max(best, new), 12), round(new, 12), -c, name))
        top = max(cand)
        best = max(best, top[1])
        chosen.append(top[3])
    return tuple(chosen)


def brute_best_cell(pool, budget, rows):
    cells = [(k, m) for k in range(1, pool.n_priors + 1) for m in range(1, pool.n_slots + 1) if k * m <= budget]
    acc = {c: brute_force_accuracy(pool, *c) for c in cells}
    best = sorted(cells, key=lambda c: (-round(acc[c][rows].mean(), 12), c[0] * c[1], -c[0]))[0]
    return best, acc[best]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_brute_force(seed):
    rng = np.random.default_rng(10 + seed)
    ans, gold = lists(rng, N=8, P=4, n=3)
    pool = pool_from_lists(ans, gold, ["a", "b", "c", "d"])
    rows = np.arange(0, 8, 2)
    assert greedy_bank(pool, 3, 6, rows) == brute_greedy(pool, 3, 6, rows)


def test_select_bank_scores_equal_brute_force():
    rng = np.random.default_rng(7)
    ans, gold = lists(rng, N=10, P=4, n=3)
    pool = pool_from_lists(ans, gold, ["a", "b", "c", "d"])
    k, B = 2, 4
    r = select_bank(pool, k, B, seed=3, n_boot=300)
    ha, hb = split_problems(10, 0.5, 3)
    folds = ((ha, hb), (hb, ha))
    assert r.halves == (tuple(str(i) for i in ha), tuple(str(i) for i in hb))
    credit = {}
    for arm in r.arms:
        cr = np.zeros(10)
        for f, (cal, test) in enumerate(folds):
            bank = arm.priors[f]
            if arm.name == "selected":
                assert bank == brute_greedy(pool, k, B, cal)
            sub = sub_bank(pool, bank)
            cell, acc = brute_best_cell(sub, min(B, sub.max_budget), cal)
            assert arm.split[f] == cell
            assert arm.held_out[f] == pytest.approx(acc[test].mean(), abs=1e-12)
            assert arm.calib[f] == pytest.approx(acc[cal].mean(), abs=1e-12)
            cr[test] = acc[test]
        assert arm.pooled == pytest.approx(cr.mean(), abs=1e-12)
        np.testing.assert_allclose(arm.credit, cr, atol=1e-12)
        credit[arm.name] = cr
        assert arm.ci[0] <= arm.pooled + 1e-12 and arm.pooled <= arm.ci[1] + 1e-12
    assert r.arm("first-k").priors == (("a", "b"), ("a", "b")) and r.arm("all").priors[0] == ("a", "b", "c", "d")
    d1, d2 = r.diffs
    assert d1.pooled == pytest.approx((credit["selected"] - credit["first-k"]).mean(), abs=1e-12)
    assert d2.pooled == pytest.approx((credit["selected"] - credit["all"]).mean(), abs=1e-12)
    assert d1.per_fold[0] == pytest.approx((credit["selected"] - credit["first-k"])[hb].mean(), abs=1e-12)
    assert r.mc_se == 0.0
    again = select_bank(pool, k, B, seed=3, n_boot=300)
    assert again.diffs == r.diffs  # seeded: the same CIs


def test_paired_ci_is_zero_width_for_identical_arms():
    rng = np.random.default_rng(8)
    ans, gold = lists(rng, N=12, P=3, n=2)
    pool = pool_from_lists(ans, gold, ["a", "b", "c"])
    r = select_bank(pool, 3, 3, seed=0, n_boot=200)  # K = P: first-k and all are the same bank
    assert r.arm("first-k").priors == r.arm("all").priors
    assert r.arm("first-k").pooled == r.arm("all").pooled


@pytest.mark.parametrize(
    "k, budget, match", [(5, 8, "from 1 to the pool's 4"), (3, 2, "cannot all be used"), (0, 4, "from 1 to")]
)
def test_select_bank_refuses_bad_k(k, budget, match):
    rng = np.random.default_rng(9)
    ans, gold = lists(rng, N=8, P=4, n=3)
    with pytest.raises(MarginalError, match=match):
        select_bank(pool_from_lists(ans, gold), k, budget)
