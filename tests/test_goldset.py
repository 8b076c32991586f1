"""Several correct answers per problem (HumanEval: passing programs with different behaviour).

Every analysis that credits "correct" must credit each correct answer id while
keeping them apart in the vote; each is checked against a brute-force
enumeration that knows nothing of the pool's arrays.
"""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import combinations, product

import numpy as np
import pytest

from marginal.analysis import (
    accuracy_grid,
    brute_force_accuracy,
    load_pool,
    margins,
    mc_cell,
    oracle_grid,
    pool_from_lists,
    pool_pass_at_k,
    prior_stats,
    weighted_credit,
)
from marginal.analysis.accuracy import MODES, TIES, compact, lumped_credit, relabel_pool
from marginal.errors import MarginalError
from marginal.store import Store
from marginal.types import Prior, Problem, Sample
from marginal.vote import credit, credit_array, tally


def multi_pool(rng, N=4, P=3, n=3, A=4, fail=0.1):
    """Answers 0..A-1; per problem a random non-empty set of correct answers (gold is its first)."""
    ans, gold, also = [], [], []
    for _ in range(N):
        ans.append(
            [
                [None if rng.random() < fail else int(rng.integers(0, A)) for _ in range(int(rng.integers(1, n + 1)))]
                for _ in range(P)
            ]
        )
        good = [int(x) for x in rng.permutation(A)[: int(rng.integers(1, A))]]
        gold.append(good[0])
        also.append(set(good[1:]))
    return pool_from_lists(ans, gold, also_correct=also), ans, gold, also


def correct_sets(gold, also):
    return [{g} | a for g, a in zip(gold, also)]


def draws(row, S, m, replace):
    """Every draw of m samples from each prior in S (with or without replacement), as tuples per prior."""
    per = [list(product(row[c], repeat=m)) if replace else list(combinations(row[c], min(m, len(row[c])))) for c in S]
    return list(product(*per))


def brute(ans, good, k, m, mode, replace, ties):
    """Expected credit per problem by enumerating every draw, from the raw lists."""
    out = []
    for row, ok in zip(ans, good):
        sets = [tuple(range(k))] if mode == "first" else list(combinations(range(len(row)), k))
        tot = 0.0
        for S in sets:
            tot += np.mean([credit(tally([list(d) for d in combo]), ok, ties) for combo in draws(row, S, m, replace)])
        out.append(tot / len(sets))
    return np.array(out)


def as_str(ans, good):
    return [[[None if x is None else str(x) for x in cell] for cell in row] for row in ans], [
        {str(x) for x in s} for s in good
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace_", [False, True])
@pytest.mark.parametrize("ties", TIES)
def test_exact_grid_credits_every_correct_answer(mode, replace_, ties):
    rng = np.random.default_rng([MODES.index(mode), int(replace_), TIES.index(ties), 7])
    differs = 0
    for _ in range(4):
        pool, ans, gold, also = multi_pool(rng)
        sa, good = as_str(ans, correct_sets(gold, also))
        g = accuracy_grid(pool, 6, mode=mode, replace=replace_, ties=ties, method="exact")
        merged = accuracy_grid(replace(pool, also_correct=()), 6, mode=mode, replace=replace_, ties=ties)
        for j, (k, m) in enumerate(g.cells):
            ref = brute(sa, good, k, m, mode, replace_, ties)
            np.testing.assert_allclose(g.acc[:, j], ref, atol=1e-12, err_msg=str((k, m)))
            np.testing.assert_allclose(brute_force_accuracy(pool, k, m, mode=mode, replace=replace_, ties=ties), ref)
            differs += int(np.abs(merged.acc[:, j] - ref).max() > 1e-9)
    assert differs  # the test can tell gold-only credit from set credit


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace_", [False, True])
def test_monte_carlo_grid_and_mc_cell_credit_every_correct_answer(mode, replace_):
    rng = np.random.default_rng([MODES.index(mode), int(replace_), 3])
    pool, ans, gold, also = multi_pool(rng, N=12, P=3, n=4, A=5)
    exact = accuracy_grid(pool, 8, mode=mode, replace=replace_, method="exact")
    mc = accuracy_grid(pool, 8, mode=mode, replace=replace_, method="mc", seed=1)
    assert not mc.exact.any()
    for j, (k, m) in enumerate(exact.cells):
        assert abs(mc.mean[j] - exact.mean[j]) <= 4 * mc.se[j] + 1e-9, (k, m)
    for k, m in [(1, 2), (2, 3), (3, 2)]:
        a, v = mc_cell(pool, k, m, reps=3000, mode=mode, replace=replace_, seed=5)
        assert abs(a.mean() - exact.at(k, m)) <= 4 * math.sqrt(v.sum()) / len(a) + 1e-9, (k, m)


def test_lumping_never_lumps_a_correct_answer():
    # each correct answer is stored once: lumping it with the wrong singletons would lose its credit
    ans = [[["a", "x1", "y"], ["b", "x2", "y"]], [["c", "c", "z1"], ["d", "z2", "z3"]]]
    pool = pool_from_lists(ans, ["a", "c"], also_correct=[{"b"}, {"d"}])
    ids, W, good = relabel_pool(pool)
    lumped, widths, good_new = compact(ids, W, True, good)
    for i in range(2):
        named = [x for x in np.unique(lumped[i]) if x < widths[i] - 1]
        assert good_new[i, named].sum() == 2  # both correct answers kept as named columns
    exact = accuracy_grid(pool, 6, method="exact")
    mc = accuracy_grid(pool, 6, method="mc", seed=2)
    assert np.abs(mc.mean - exact.mean).max() <= 4 * mc.se.max() + 1e-9
    rng = np.random.default_rng(0)
    cnt = rng.integers(0, 4, size=(300, 5))
    mask = rng.random((300, 5)) < 0.4
    lump = rng.integers(0, 3, size=300)
    spread = np.concatenate([cnt, (np.arange(3)[None, :] < lump[:, None]).astype(int)], axis=1)
    for ties in TIES:
        wide = np.c_[mask, np.zeros((300, 3), bool)]
        np.testing.assert_array_equal(lumped_credit(np.c_[cnt, lump], ties, mask), credit_array(spread, wide, ties))


def test_credit_array_mask_matches_credit():
    rng = np.random.default_rng(4)
    for _ in range(300):
        cnt = rng.integers(0, 3, size=4)
        good = rng.random(4) < 0.5
        counts = {str(a): int(c) for a, c in enumerate(cnt) if c}
        ok = {str(a) for a in np.flatnonzero(good)}
        for ties in TIES:
            assert credit_array(cnt, good, ties) == pytest.approx(credit(counts, ok, ties))
        assert credit_array(cnt, 1) == pytest.approx(credit(counts, "1"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace_", [False, True])
def test_oracle_and_pass_at_k_count_every_correct_sample(mode, replace_):
    rng = np.random.default_rng([MODES.index(mode), int(replace_), 9])
    pool, ans, gold, also = multi_pool(rng, N=5)
    good = correct_sets(gold, also)
    og = oracle_grid(pool, 6, mode=mode, replace=replace_)
    for j, (k, m) in enumerate(og.cells):
        for i, row in enumerate(ans):
            sets = [tuple(range(k))] if mode == "first" else list(combinations(range(len(row)), k))
            tot = 0.0
            for S in sets:
                tot += np.mean([any(x in good[i] for d in combo for x in d) for combo in draws(row, S, m, replace_)])
            assert og.acc[i, j] == pytest.approx(tot / len(sets), abs=1e-12)
    ref = []
    for row, ok in zip(ans, good):
        flat = [x for cell in row for x in cell]
        ref.append(np.mean([any(flat[t] in ok for t in s) for s in combinations(range(len(flat)), 2)]))
    assert pool_pass_at_k(pool, 2) == pytest.approx(np.mean(ref))


def test_margins_and_prior_accuracy_treat_other_correct_answers_as_allies():
    # "a" and "b" both correct: the best correct answer against the best wrong one
    ans = [[["a", "a", "x", "x"], ["b", "b", "b", "x"]]]
    pool = pool_from_lists(ans, ["a"], also_correct=[{"b"}])
    m = margins(pool)
    # K=1: a .5 vs x .5 -> 0; K=2: mixture a .25, b .375, x .375 -> 0.375 - 0.375
    np.testing.assert_allclose(m.gamma[0], [0.0, 0.0], atol=1e-12)
    pool2 = pool_from_lists([[["a", "a", "a", "x"], ["b", "b", "x", "y"]]], ["a"], also_correct=[{"b"}])
    # K=2: a .375, b .25, x .25, y .125 -> .375 - .25; gold-only would put b among the competitors too
    assert margins(pool2).gamma[0, 1] == pytest.approx(0.125)
    np.testing.assert_allclose(prior_stats(pool2).accuracy, [0.75, 0.5])


def test_uniform_weighted_vote_credits_every_correct_answer():
    rng = np.random.default_rng(8)
    pool, *_ = multi_pool(rng, N=30, P=3, n=4, A=4)
    e = accuracy_grid(pool, 12, method="exact")
    for k, m in [(1, 2), (3, 2)]:
        cr = weighted_credit(pool, np.ones((1, 3)), k, m, reps=600, seed=3)
        assert abs(cr[0].mean() - e.at(k, m)) < 4 * math.sqrt(0.25 / 600 / 30)


def test_pool_validates_also_correct():
    a = np.array([[[0, 1, 2]]])
    with pytest.raises(MarginalError, match="also_correct"):
        pool_from_lists([[["a"]]], ["a"], also_correct=[set(), set()])
    from marginal.analysis import Pool

    with pytest.raises(MarginalError, match="also_correct"):
        Pool(a, np.zeros(1), ("p",), ("0",), also_correct=((0,),))  # gold itself
    with pytest.raises(MarginalError, match="also_correct"):
        Pool(a, np.full(1, -1), ("p",), ("0",), also_correct=((1,),))  # no gold known
    assert Pool(a, np.zeros(1), ("p",), ("0",), also_correct=((),)).also_correct == ()


def _sample(pid, prior, idx, ans, cor):
    return Sample(pid, prior, idx, f"text {ans}", ans, cor, 3, 0.0, idx)


def test_load_pool_keeps_passing_programs_apart(tmp_path):
    # HumanEval-like: two passing behaviours s1, s2 and a failing s3 that outnumbers each
    st = Store(tmp_path / "he.db")
    st.create_run("r", {}, [Problem("h0", "q", None)], [Prior("default")], "test")
    rows = [("s1", True), ("s1", True), ("s2", True), ("s2", True), ("s3", False), ("s3", False), ("s3", False)]
    st.add_samples("r", [_sample("h0", "default", i, a, c) for i, (a, c) in enumerate(rows)])
    st.close()
    pool = load_pool(tmp_path / "he.db")
    assert len(pool.also_correct[0]) == 1 and pool.answer_names[0][pool.gold[0]] == "s1"
    g = accuracy_grid(pool, 7, method="exact")
    assert g.at(1, 7) == 0.0  # s3 wins the vote 3:2:2, as a live run would have it
    assert oracle_grid(pool, 7).mean[-1] == pytest.approx(1.0)
