"""Analysis maths against brute-force references and hand-computed values."""

from __future__ import annotations

import math
from itertools import combinations, product

import numpy as np
import pytest

from marginal.analysis import (
    FAILED,
    Pool,
    accuracy_grid,
    bias_variance,
    brute_force_accuracy,
    compare_weights,
    drift,
    label_free_margins,
    load_pool,
    margins,
    mc_cell,
    oracle_grid,
    pass_at_k,
    plan,
    pool_from_lists,
    pool_pass_at_k,
    prior_stats,
    weighted_credit,
)
from marginal.analysis.accuracy import MODES, TARGET_SE, TIES, compact, lumped_credit, relabel
from marginal.analysis.margins import normal_vote
from marginal.errors import MarginalError
from marginal.store import Store
from marginal.types import Prior, Problem, Sample
from marginal.vote import credit_array


def rand_pool(rng, N=3, P=3, n=3, A=3, fail=0.15, ragged=True):
    ans, gold = [], []
    for _ in range(N):
        row = []
        for _ in range(P):
            nc = int(rng.integers(1, n + 1)) if ragged else n
            row.append([None if rng.random() < fail else int(rng.integers(0, A)) for _ in range(nc)])
        ans.append(row)
        gold.append(int(rng.integers(0, A + 1)))  # A = never sampled
    return pool_from_lists(ans, gold)


# -- exact accuracy ------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("ties", TIES)
def test_exact_equals_brute_force(mode, replace, ties):
    rng = np.random.default_rng([MODES.index(mode), int(replace), TIES.index(ties)])
    worst = 0.0
    for _ in range(8):
        pool = rand_pool(rng)
        g = accuracy_grid(pool, 6, mode=mode, replace=replace, ties=ties, method="exact")
        assert g.exact.all()
        for j, (k, m) in enumerate(g.cells):
            bf = brute_force_accuracy(pool, k, m, mode=mode, replace=replace, ties=ties)
            worst = max(worst, float(np.abs(bf - g.acc[:, j]).max()))
    assert worst < 1e-9


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("ties", TIES)
def test_two_answer_fast_path_equals_brute_force_and_general_path(mode, replace, ties):
    from marginal.analysis.accuracy import _exact_problem, _LogFact

    rng = np.random.default_rng([7, MODES.index(mode), int(replace), TIES.index(ties)])
    pool = rand_pool(rng, N=12, P=4, n=4, A=2, fail=0.2)  # gold is 0, 1 or never sampled (2)
    g = accuracy_grid(pool, 8, mode=mode, replace=replace, ties=ties, method="exact")
    for j, (k, m) in enumerate(g.cells):
        bf = brute_force_accuracy(pool, k, m, mode=mode, replace=replace, ties=ties)
        np.testing.assert_allclose(g.acc[:, j], bf, atol=1e-9)
    c, f, n = pool.counts()
    lf = _LogFact(10)
    for i in range(pool.n_problems):
        good = pool.correct_mask(c.shape[2])[i]
        gen, ok = _exact_problem(c[i], f[i], n[i], good, g.cells, mode, replace, ties, 10**6, lf)
        np.testing.assert_allclose(gen, g.acc[i], atol=1e-9)


def test_brute_force_by_hand():
    # one prior, samples g g x ; M=2 without replacement: {gg, gx, gx} -> 1, 0.5, 0.5
    pool = pool_from_lists([[["g", "g", "x"]]], ["g"])
    assert brute_force_accuracy(pool, 1, 2)[0] == pytest.approx(2 / 3)
    assert brute_force_accuracy(pool, 1, 2, ties="strict")[0] == pytest.approx(1 / 3)
    assert accuracy_grid(pool, 2, method="exact").at(1, 2) == pytest.approx(2 / 3, abs=1e-12)
    # with replacement: P(gg)=4/9 -> 1, P(gx or xg)=4/9 -> .5, xx -> 0
    assert accuracy_grid(pool, 2, replace=True, method="exact").at(1, 2) == pytest.approx(4 / 9 + 2 / 9, abs=1e-12)


def test_failed_samples_abstain_and_can_be_dropped():
    # prior with g, None: M=1 -> 1/2 (a failed draw votes for nothing)
    pool = pool_from_lists([[["g", None]]], ["g"])
    assert accuracy_grid(pool, 1, method="exact").at(1, 1) == pytest.approx(0.5)
    assert accuracy_grid(pool.drop_failed(), 1, method="exact").at(1, 1) == pytest.approx(1.0)


def test_head_keeps_each_cells_first_samples_as_designed():
    # a grown cell (4 samples) beside a designed one (2): head(2) is the grid of the designed pool
    grown = pool_from_lists([[["g", "x", "g", "g"], ["x", "g"]]], ["g"])
    designed = pool_from_lists([[["g", "x"], ["x", "g"]]], ["g"])
    head = grown.head(2)
    assert head.n_slots == 2 and head.sizes.tolist() == [[2, 2]]
    want = accuracy_grid(designed, 2, method="exact").acc
    assert np.allclose(accuracy_grid(head, 2, method="exact").acc, want, equal_nan=True)
    assert not np.allclose(accuracy_grid(grown, 2, method="exact").acc[0, :2], want[0, :2])
    with pytest.raises(MarginalError, match="positive integer"):
        grown.head(0)


def test_never_sampled_gold_scores_zero():
    pool = pool_from_lists([[["x", "y"], ["x", "x"]]], ["g"])
    g = accuracy_grid(pool, method="exact")
    assert np.all(g.acc == 0)


def test_larger_pools_mix_exact_and_monte_carlo():
    rng = np.random.default_rng(0)
    pool = rand_pool(rng, N=30, P=5, n=6, A=6, ragged=False)
    full = accuracy_grid(pool, 20, method="exact", max_states=10**7)
    auto = accuracy_grid(pool, 20, method="auto", max_states=60, reps=300, seed=1)
    assert 0 < auto.exact.mean() < 1  # some cells each way
    d = auto.mean - full.mean
    assert np.all(np.abs(d) <= 4 * auto.se + 1e-12)
    assert np.all(auto.se[auto.exact.all(axis=0)] == 0)
    with pytest.raises(MarginalError, match="too many vote states"):
        accuracy_grid(pool, 20, method="exact", max_states=60)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("ties", TIES)
def test_monte_carlo_within_four_standard_errors(mode, replace, ties):
    rng = np.random.default_rng(7)
    pool = rand_pool(rng, N=40, P=4, n=4, A=4)
    e = accuracy_grid(pool, 10, mode=mode, replace=replace, ties=ties, method="exact")
    m = accuracy_grid(pool, 10, mode=mode, replace=replace, ties=ties, method="mc", reps=300, seed=3)
    assert not m.exact.any()
    assert np.all(np.abs(m.mean - e.mean) <= 4 * m.se + 1e-12)
    assert m.se.max() > 0
    for k, mm in [(1, 2), (2, 3), (3, 1)]:
        a, v = mc_cell(pool, k, mm, reps=300, mode=mode, replace=replace, ties=ties, seed=5)
        assert abs(a.mean() - e.at(k, mm)) <= 4 * math.sqrt(v.sum()) / len(a) + 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_default_monte_carlo_error_is_within_a_fifth_of_a_point(mode):
    # the cells left to Monte Carlo (here all multi-answer problems: no exact work) draw until SE <= TARGET_SE
    rng = np.random.default_rng(11)
    pool = rand_pool(rng, N=10, P=3, n=4, A=5, ragged=False)
    g = accuracy_grid(pool, 12, mode=mode, exact_cells=0)
    assert (~g.exact).sum() > 10
    assert g.se.max() <= TARGET_SE < 0.001
    for j, (k, m) in enumerate(g.cells):
        assert abs(g.mean[j] - brute_force_accuracy(pool, k, m, mode=mode).mean()) <= 0.002, (k, m)
    fixed = accuracy_grid(pool, 12, mode=mode, exact_cells=0, target_se=None)  # 128 draws, as before
    assert fixed.se.max() > 0.002


@pytest.mark.parametrize("ties", TIES)
def test_lumping_answers_stored_once_is_exact(ties):
    # a long tail of answers stored once each: Monte Carlo counts them in one lump column
    rng = np.random.default_rng(12)
    ans, gold = [], []
    for i in range(6):
        row = [
            [str(rng.choice(["g", "w"])) if rng.random() < 0.5 else f"t{i}-{c}-{j}" for j in range(4)] for c in range(3)
        ]
        row[0][0] = None
        ans.append(row)
        gold.append("g")
    pool = pool_from_lists(ans, gold)
    ids, W = relabel(pool.answers, pool.gold)
    lumped, widths, _ = compact(ids, W, lump=True)
    assert (widths < W).all() and lumped.max() == W
    for mode in MODES:
        g = accuracy_grid(pool, 12, mode=mode, ties=ties, method="mc", seed=4)
        for j, (k, m) in enumerate(g.cells):
            ref = brute_force_accuracy(pool, k, m, mode=mode, ties=ties).mean()
            assert abs(g.mean[j] - ref) <= 4 * g.se[j] + 1e-12, (mode, k, m)
    cnt = rng.integers(0, 4, size=(200, 5))
    lump = rng.integers(0, 3, size=200)
    spread = np.concatenate([cnt, (np.arange(3)[None, :] < lump[:, None]).astype(int)], axis=1)
    np.testing.assert_array_equal(lumped_credit(np.c_[cnt, lump], ties), credit_array(spread, 0, ties))


def test_monte_carlo_is_not_first_m_samples():
    # stored order puts the wrong answers first; the first-M estimate would be 0
    pool = pool_from_lists([[["x", "x", "g", "g", "g"]]], ["g"])
    m = accuracy_grid(pool, 2, method="mc", reps=2000, seed=0)
    exact = accuracy_grid(pool, 2, method="exact")
    assert exact.at(1, 2) == pytest.approx(0.3 + 0.6 * 0.5)
    assert abs(m.at(1, 2) - exact.at(1, 2)) < 4 * m.se[m.index(1, 2)]


# -- pass@k, oracle ------------------------------------------------------------------
def test_pass_at_k_matches_enumeration():
    for n, c, k in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (4, 4, 2), (7, 3, 4)]:
        ref = np.mean([any(i < c for i in s) for s in combinations(range(n), k)])
        assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(MarginalError):
        pass_at_k(3, 1, 4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("replace", [False, True])
def test_oracle_matches_enumeration(mode, replace):
    rng = np.random.default_rng(11)
    pool = rand_pool(rng, N=4, P=3, n=3, A=3)
    og = oracle_grid(pool, 6, mode=mode, replace=replace)
    for j, (k, m) in enumerate(og.cells):
        for i in range(pool.n_problems):
            a, g = pool.answers[i], pool.gold[i]
            sets = [tuple(range(k))] if mode == "first" else list(combinations(range(3), k))
            tot = 0.0
            for S in sets:
                per = []
                for c in S:
                    st = [x for x in a[c] if x != -2]
                    per.append(list(product(st, repeat=m)) if replace else list(combinations(st, min(m, len(st)))))
                tot += np.mean([any(g in d for d in combo) for combo in product(*per)])
            assert og.acc[i, j] == pytest.approx(tot / len(sets), abs=1e-12)


def test_pool_pass_at_k():
    pool = pool_from_lists([[["g", "x"], ["x", "x"]], [["g", "g"], ["y", None]]], ["g", "g"])
    assert pool_pass_at_k(pool, 1) == pytest.approx((1 / 4 + 2 / 4) / 2)


# -- margins, drift, regimes ---------------------------------------------------------
HAND = [[["g", "g", "x", "x"], ["g", "y", "y", "y"], ["g", "g", "g", "z"]]]


def test_gamma_kappa_lambda_by_hand():
    pool = pool_from_lists(HAND, ["g"])
    m = margins(pool)
    # K=1: g .5, x .5 -> 0; K=2: g .375, x .25, y .375 -> 0; K=3: g .5, y .25 -> .25
    np.testing.assert_allclose(m.gamma[0], [0.0, 0.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(m.label_free[0], [0.0, 0.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(m.dominance, [0, 0, 1])
    d = drift(pool)
    np.testing.assert_allclose(d.kappa[0], [2 * 0.0, 3 * 0.25], atol=1e-12)
    assert d.lam == pytest.approx(0.375)
    # κ_2 = new prior's pairwise margin against the current competitor y (0.75 - 0) minus Γ_2 (0)
    assert d.kappa[0, 1] == pytest.approx(0.75 - 0.0 - m.gamma[0, 1])


def test_gamma_negative_and_outvoted():
    pool = pool_from_lists([[["g", "x", "x"], ["x", "x", "g"]], [["y", "y", "y"], ["y", "y", "y"]]], ["g", "g"])
    m = margins(pool)
    np.testing.assert_allclose(m.gamma[0], [1 / 3 - 2 / 3, 1 / 3 - 2 / 3])
    np.testing.assert_allclose(m.gamma[1], [-1, -1])
    assert list(m.outvoted) == [True, False] and list(m.gold_sampled) == [True, False]


def _regime_pool(kind, N=40, P=8, n=20, seed=0):
    rng = np.random.default_rng(seed)
    A, G = [], []
    for _ in range(N):
        row = []
        for c in range(P):
            if kind == "aligned":  # each prior: gold plus its own wrong answer
                pg, wrong = rng.uniform(0.35, 0.5), [f"w{c}"]
            elif kind == "saturating":  # two distinct priors, then copies of their mixture
                pg, wrong = rng.uniform(0.35, 0.5), ([f"w{c}"] if c < 2 else ["w0", "w1"])
            else:  # misaligned: the default prompt is right, the rest share one wrong answer
                pg, wrong = (rng.uniform(0.8, 1.0) if c == 0 else rng.uniform(0.05, 0.2)), ["w"]
            k = int(round(pg * n))
            row.append(["g"] * k + [wrong[j % len(wrong)] for j in range(n - k)])
        A.append(row)
        G.append("g")
    return pool_from_lists(A, G)


@pytest.mark.parametrize("kind", ["aligned", "misaligned", "saturating"])
def test_regimes_are_classified(kind):
    d = drift(_regime_pool(kind), seed=1)
    assert d.regime == kind
    assert d.lam_ci[0] <= d.lam <= d.lam_ci[1]
    if kind == "aligned":
        assert d.lam_ci[0] > 0 and d.recommend(64, 20) == (8, 8)
    if kind == "misaligned":
        assert d.lam_ci[1] < 0 and d.recommend(64, 20) == (1, 20)
    if kind == "saturating":
        assert d.k95 == 2 and d.recommend(16, 20) == (2, 8)


def test_bias_variance_by_hand_and_normal_approximation():
    # two priors, gold vs x: prior 0 = g g g x (mu .5), prior 1 = g x x x (mu -.5)
    pool = pool_from_lists([[["g", "g", "g", "x"], ["g", "x", "x", "x"]]], ["g"])
    bv = bias_variance(pool, 8, method="exact")
    # per prior: E X^2 = 1, var = 1 - .25 = .75, unbiased x 4/3 = 1
    assert bv.gamma[0] == pytest.approx(0.0)
    assert bv.sigma2_w[0] == pytest.approx(1.0)
    # prior means .5, -.5: var (ddof 1) = .5; noise = mean(1/4) = .25 -> .25
    assert bv.sigma2_btw[0] == pytest.approx(0.25)
    # mirror-image priors: each cell's expected credit is 1/2 by symmetry (up to the draws' noise)
    np.testing.assert_allclose(bv.normal, 0.5, atol=0.04)


@pytest.mark.parametrize("kind", ["aligned", "misaligned", "saturating", "many-competitors"])
def test_normal_approximation_within_two_points_of_the_exact_grid(kind):
    # many-competitors: weak priors, the wrong answers spread over 15 values (a weak model on GSM8K),
    # where a product of one-competitor normals was 10 points off (competitors share gold's count)
    if kind == "many-competitors":
        rng = np.random.default_rng(3)
        skill = [0.05, 0.1, 0.3, 0.25, 0.15, 0.1]
        A = [
            [[("g" if rng.random() < s else f"w{rng.integers(15)}") for _ in range(8)] for s in skill]
            for _ in range(40)
        ]
        pool = pool_from_lists(A, ["g"] * 40)
    else:
        pool = _regime_pool(kind, N=20, P=4, n=6)
    bv = bias_variance(pool, 12, method="mc")
    assert bv.mean_abs_error < 0.02


def test_normal_vote_converges_to_the_exact_multinomial_vote():
    # one prior, shares g .45, x .35, y .1, failed .1: brute-force credit of M draws by enumerating counts
    p = np.array([[[0.45, 0.35, 0.10]]])
    good = np.array([[True, False, False]])
    for m in (1, 4, 40):
        exact = 0.0
        for cg, cx, cy in product(range(m + 1), repeat=3):
            if cg + cx + cy > m:
                continue
            f = m - cg - cx - cy
            pr = math.factorial(m) / math.prod(math.factorial(c) for c in (cg, cx, cy, f))
            pr *= 0.45**cg * 0.35**cx * 0.1**cy * 0.1**f
            top = max(cg, cx, cy)
            if top > 0 and cg == top:
                exact += pr / sum(c == top for c in (cg, cx, cy))
        approx = normal_vote(p, good, np.array([True]), ((1, m),), draws=20_000)[0, 0]
        # the normal shape is the only approximation left: off at M = 1, 4, close at M = 40
        assert abs(approx - exact) < {1: 0.06, 4: 0.02, 40: 0.01}[m], (m, approx, exact)


def test_label_free_measures_and_error():
    pool = pool_from_lists(HAND, None)
    assert pool.label_free
    np.testing.assert_allclose(label_free_margins(pool)[0], [0.0, 0.0, 0.25], atol=1e-12)
    st = prior_stats(pool)
    assert st.accuracy is None and st.agreement.shape == (3, 3)
    for f in (lambda: accuracy_grid(pool), lambda: margins(pool), lambda: drift(pool), lambda: plan(pool, 4)):
        with pytest.raises(MarginalError, match="only label-free measures"):
            f()


# -- weights, planner ----------------------------------------------------------------
def test_uniform_weighted_vote_equals_plain_vote():
    rng = np.random.default_rng(3)
    pool = rand_pool(rng, N=50, P=4, n=4, A=4)
    for mode in MODES:
        e = accuracy_grid(pool, 16, mode=mode, method="exact")
        for k, m in [(1, 1), (2, 3), (4, 2)]:
            cr = weighted_credit(pool, np.array([[1.0] * 4, [2.5] * 4]), k, m, reps=400, mode=mode, seed=2)
            np.testing.assert_allclose(cr[0], cr[1])  # scaling weights changes nothing
            se = math.sqrt(0.25 / 400 / 50)
            assert abs(cr[0].mean() - e.at(k, m)) < 4 * se


def test_weighting_helps_when_one_prior_is_reliable():
    # prior 0 is right 90% of the time, the rest are noise with scattered answers
    rng = np.random.default_rng(0)
    A, G = [], []
    for _ in range(120):
        row = [["g" if rng.random() < 0.9 else "w" for _ in range(4)]]
        for _c in range(1, 5):
            row.append([f"n{int(rng.integers(0, 3))}" for _ in range(4)])
        A.append(row)
        G.append("g")
    pool = pool_from_lists(A, G)
    wc = compare_weights(pool, 5, 1, split=0.5, seed=0, reps=100)
    j = wc.kinds.index("calibrated")
    assert wc.weights[j, 0] > wc.weights[j, 1:].max()
    assert wc.verdict("calibrated") == "beats uniform"


def test_planner_against_baselines():
    pool = _regime_pool("aligned", N=60, P=4, n=6, seed=2)
    p = plan(pool, 12, split=0.5, seed=0)
    assert p.n_calib + p.n_test == 60
    names = [s.name for s in p.scored]
    assert names[:3] == ["planner", "repetition-only", "diversity-only"] and names[-1] == "best in hindsight"
    best = p.get("best in hindsight")
    assert best.accuracy >= p.get("planner").accuracy - 1e-12
    assert p.choice[0] > 1  # an aligned bank favours several priors
    assert p.get("planner").accuracy > p.get("repetition-only").accuracy
    for s in p.scored:
        assert s.ci[0] <= s.accuracy <= s.ci[1]
    assert sum(b.n_test for b in p.buckets) == p.n_test


# -- errors --------------------------------------------------------------------------
def test_budget_too_large_names_the_largest():
    pool = pool_from_lists(HAND, ["g"])
    with pytest.raises(MarginalError, match="largest valid budget is 12"):
        accuracy_grid(pool, 13)
    with pytest.raises(MarginalError, match="positive"):
        accuracy_grid(pool, 0)


def test_empty_pool_errors():
    with pytest.raises(MarginalError, match="empty"):
        pool_from_lists([], [])
    with pytest.raises(MarginalError, match="empty"):
        pool_from_lists([[[]]], ["g"])
    with pytest.raises(MarginalError, match="empty"):
        Pool(np.full((1, 1, 1), -2), np.zeros(1), ("p",), ("0",))


def test_all_failed_run_is_analysable():
    # every sample failed: nothing votes, so every allocation scores 0 (not an error)
    pool = pool_from_lists([[[None, None], [None]], [[None], [None, None]]], ["g", "h"])
    g = accuracy_grid(pool, method="exact")
    assert np.all(g.acc == 0)
    assert margins(pool).gamma.max() == 0
    assert np.all(bias_variance(pool, 2).normal == 0)


# -- loading from the store ----------------------------------------------------------
def _sample(pid, prior, i, ans, cor):
    return Sample(pid, prior, i, text=f"... {ans}", answer=ans, correct=cor, error=None if ans else "no answer")


def make_store(path, *, labelled=True):
    st = Store(path)
    probs = [
        Problem("p0", "q0", "4" if labelled else None),
        Problem("p1", "q1", "7" if labelled else None),
        Problem("p2", "q2", "9" if labelled else None),
    ]
    priors = [Prior("default"), Prior("terse", template="Briefly: {question}")]
    st.create_run("r1", {"x": 1}, probs, priors, "test")
    L = labelled
    rows = [
        # p0: "4" and "4.0" both graded correct -> two correct ids (the vote keeps them apart)
        ("p0", "default", 0, "4", True if L else None),
        ("p0", "default", 1, "4.0", True if L else None),
        ("p0", "default", 2, "5", False if L else None),
        ("p0", "terse", 0, None, None),
        ("p0", "terse", 1, "5", False if L else None),
        # p1: never correct, gold never sampled
        ("p1", "default", 0, "6", False if L else None),
        ("p1", "terse", 0, "8", False if L else None),
        ("p1", "terse", 1, "6", False if L else None),
        # p2
        ("p2", "default", 0, "9", True if L else None),
        ("p2", "terse", 0, "9", True if L else None),
    ]
    st.add_samples("r1", [_sample(*r) for r in rows])
    st.close()
    return path


def test_load_pool_from_store(tmp_path):
    pool = load_pool(make_store(tmp_path / "run.db"))
    assert pool.priors == ("default", "terse") and pool.problems == ("p0", "p1", "p2")
    assert pool.answers.shape == (3, 2, 3)
    a0 = pool.answers[0]
    g0 = pool.gold[0]
    assert a0[0, 0] == g0 and a0[0, 1] != g0 and a0[0, 2] != g0  # "4" is gold (the reference)
    assert pool.also_correct[0] == (a0[0, 1],) and pool.answer_names[0][g0] == "4"  # "4.0" is also correct
    assert a0[1, 0] == FAILED and a0[1, 2] == -2  # failed kept as abstention, ragged padded
    assert not (pool.answers[1] == pool.gold[1]).any() and pool.gold[1] >= 0  # gold never sampled
    # p0, prior default, M=1: P(gold) = 2/3 ; dropping failed changes the terse prior only
    g = accuracy_grid(pool, 2, method="exact")
    assert g.acc[0, g.index(1, 1)] == pytest.approx(2 / 3)
    # the default prior's three samples "4", "4.0", "5" tie 1:1:1: two of the three tied answers are correct
    g3 = accuracy_grid(pool, 3, method="exact")
    assert g3.acc[0, g3.index(1, 3)] == pytest.approx(2 / 3)
    assert g.acc[1].max() == 0
    dropped = load_pool(tmp_path / "run.db", failed="drop")
    assert (dropped.answers != FAILED).all()


def test_load_pool_label_free_and_errors(tmp_path):
    pool = load_pool(make_store(tmp_path / "lf.db", labelled=False))
    assert pool.label_free
    with pytest.raises(MarginalError, match="only label-free measures"):
        accuracy_grid(pool)
    with pytest.raises(MarginalError, match="no such run database"):
        load_pool(tmp_path / "nope.db")
    st = Store(tmp_path / "empty.db")
    st.close()
    with pytest.raises(MarginalError, match="no run"):
        load_pool(tmp_path / "empty.db")
    st = Store(tmp_path / "nosamples.db")
    st.create_run("r0", {}, [Problem("p", "q", "1")], [Prior("default")], "t")
    st.close()
    with pytest.raises(MarginalError, match="empty"):
        load_pool(tmp_path / "nosamples.db")
    with pytest.raises(MarginalError, match="unknown run"):
        load_pool(tmp_path / "run.db" if (tmp_path / "run.db").exists() else make_store(tmp_path / "run.db"), run="r2")


def test_load_pool_all_failed_with_references_is_labelled(tmp_path):
    st = Store(tmp_path / "f.db")
    st.create_run("r", {}, [Problem("a", "q", "1"), Problem("b", "q", "2")], [Prior("x"), Prior("y")], "t")
    st.add_samples("r", [Sample(p, c, j, "", None, None, "no answer") for p in "ab" for c in "xy" for j in range(2)])
    st.close()
    pool = load_pool(tmp_path / "f.db")
    assert not pool.label_free and (pool.answers == FAILED).all()
    assert np.all(accuracy_grid(pool).acc == 0)


def test_pool_validates_arrays():
    with pytest.raises(MarginalError, match="padding"):
        Pool(np.array([[[0, -2, 1]]]), np.zeros(1), ("p",), ("0",))
    with pytest.raises(MarginalError, match="ids"):
        Pool(np.array([[[0, -3]]]), np.zeros(1), ("p",), ("0",))
    with pytest.raises(MarginalError, match="prior names"):
        Pool(np.array([[[0, 1]]]), np.zeros(1), ("p", "q"), ("0",))
