"""The regime test against brute-force references: drift per sub-bank, exact held-out credits,
the bootstrap replicate recomputed from resampled pools, Spearman by hand."""

from __future__ import annotations

import json
import math
from itertools import permutations

import numpy as np
import pytest

from marginal.analysis import brute_force_accuracy, drift, pool_from_lists, regime_test, spearman, sub_bank
from marginal.analysis.margins import REGIMES
from marginal.analysis.regimes import (
    bank_cells,
    build_cache,
    classify,
    draw_banks,
    evaluate,
    headline,
    pick_examples,
    ranks,
)
from marginal.analysis.weights import split_problems
from marginal.errors import MarginalError


def skewed_pool(seed, N=16, P=5, n=4, A=3):
    """Priors of different quality, so that sub-banks fall into different regimes."""
    rng = np.random.default_rng(seed)
    q = np.linspace(0.8, 0.15, P)
    ans = [
        [
            [None if rng.random() < 0.05 else (0 if rng.random() < q[c] else int(rng.integers(1, A))) for _ in range(n)]
            for c in range(P)
        ]
        for _ in range(N)
    ]
    return pool_from_lists(ans, [0] * N, [f"p{c}" for c in range(P)])


def test_draw_banks_distinct_ordered_seeded():
    pri = [f"p{i}" for i in range(10)]
    b1 = draw_banks(pri, 200, (4, 8), np.random.default_rng(0))
    b2 = draw_banks(pri, 200, (4, 8), np.random.default_rng(0))
    assert b1 == b2 and len(set(b1)) == 200
    assert all(4 <= len(b) <= 8 and len(set(b)) == len(b) for b in b1)
    assert {len(b) for b in b1} == {4, 5, 6, 7, 8}
    small = draw_banks(pri[:4], 200, (4, 8), np.random.default_rng(0))  # only 24 ordered sub-banks exist
    assert sorted(small) == sorted(tuple(p) for p in permutations(pri[:4]))
    with pytest.raises(MarginalError, match="sub-banks of 4-8 priors"):
        draw_banks(pri[:3], 10, (4, 8), np.random.default_rng(0))


@pytest.mark.parametrize(
    "size, budget, n, div, rep",
    [
        (4, 4, 8, (4, 1), (1, 4)),
        (7, 4, 8, (4, 1), (1, 4)),
        (8, 8, 8, (8, 1), (1, 8)),
        (4, 8, 8, (4, 2), (1, 8)),
        (5, 8, 8, (4, 2), (1, 8)),
        (7, 8, 8, (4, 2), (1, 8)),
        (6, 8, 6, (4, 2), (1, 6)),
        (6, 6, 8, (6, 1), (1, 6)),
        (5, 6, 8, (3, 2), (1, 6)),
    ],
)
def test_bank_cells(size, budget, n, div, rep):
    assert bank_cells(size, budget, n) == (div, rep)


def test_point_estimates_equal_drift_and_brute_force():
    pool = skewed_pool(0)
    banks = draw_banks(pool.priors, 25, (4, 8), np.random.default_rng(1))
    cal, test = split_problems(pool.n_problems, 0.5, 4)
    cache = build_cache(pool, banks, cal, test, budgets=(4, 8), inner_boot=400, seed=5)
    st = evaluate(cache, np.arange(len(cal)), np.arange(len(test)))
    cp, tp = pool.subset(cal), pool.subset(test)
    seen = set()
    for s, bank in enumerate(banks):
        d = drift(sub_bank(cp, bank), n_boot=400, seed=5)
        assert st.lam[s] == pytest.approx(d.lam, abs=1e-12)
        assert (st.lo[s], st.hi[s]) == pytest.approx(d.lam_ci, abs=1e-12)
        assert REGIMES[st.regime[s]] == d.regime and st.k95[s] == d.k95
        seen.add(d.regime)
        sub = sub_bank(tp, bank)
        for b, B in enumerate((4, 8)):
            (kd, md), (kr, mr) = bank_cells(len(bank), B, pool.n_slots)
            div = brute_force_accuracy(sub, kd, md).mean()
            rep = brute_force_accuracy(sub, 1, min(mr, sub.n_slots)).mean()
            assert st.div[s, b] == pytest.approx(div, abs=1e-12) and st.rep[s, b] == pytest.approx(rep, abs=1e-12)
            assert st.gain[s, b] == pytest.approx(div - rep, abs=1e-12)
            csub = sub_bank(cp, bank)  # the same two arms on the calibration half
            cgain = (
                brute_force_accuracy(csub, kd, md).mean() - brute_force_accuracy(csub, 1, min(mr, csub.n_slots)).mean()
            )
            assert st.cal_gain[s, b] == pytest.approx(cgain, abs=1e-12)
    assert len(seen) >= 2  # the reference check covers more than one regime


def test_a_bootstrap_replicate_equals_the_analysis_of_the_resampled_pool():
    pool = skewed_pool(1)
    banks = draw_banks(pool.priors, 12, (4, 8), np.random.default_rng(2))
    cal, test = split_problems(pool.n_problems, 0.5, 0)
    cache = build_cache(pool, banks, cal, test, budgets=(4,), inner_boot=300, seed=0)
    rng = np.random.default_rng(3)
    ic, it = rng.integers(0, len(cal), len(cal)), rng.integers(0, len(test), len(test))
    st = evaluate(cache, ic, it)
    cp, tp = pool.subset(cal[ic]), pool.subset(test[it])  # repeated problems, as the bootstrap draws them
    for s, bank in enumerate(banks):
        d = drift(sub_bank(cp, bank), n_boot=300, seed=0)
        assert st.lam[s] == pytest.approx(d.lam, abs=1e-12)
        assert (st.lo[s], st.hi[s]) == pytest.approx(d.lam_ci, abs=1e-12)
        assert REGIMES[st.regime[s]] == d.regime
        (kd, md), (kr, mr) = bank_cells(len(bank), 4, pool.n_slots)
        sub = sub_bank(tp, bank)
        want = brute_force_accuracy(sub, kd, md).mean() - brute_force_accuracy(sub, kr, mr).mean()
        assert st.gain[s, 0] == pytest.approx(want, abs=1e-12)
        csub = sub_bank(cp, bank)
        want = brute_force_accuracy(csub, kd, md).mean() - brute_force_accuracy(csub, kr, mr).mean()
        assert st.cal_gain[s, 0] == pytest.approx(want, abs=1e-12)


def test_classify_matches_drift_rule():
    lo, hi = np.array([0.1, 0.1, -0.3, -0.1, 0.0]), np.array([0.3, 0.3, -0.1, 0.2, 0.0])
    curve = np.array(
        [[0, 0.5, 0.9, 1.0], [0, 1.0, 1.0, 1.0], [0, -0.1, -0.2, -0.3], [0, 0.1, 0.1, np.nan], [0, 0, 0, 0]]
    )
    regime, k95 = classify(lo, hi, curve, np.array([4, 4, 4, 3, 4]))
    assert [REGIMES[r] for r in regime] == ["aligned", "saturating", "misaligned", "saturating", "saturating"]
    assert k95.tolist() == [4, 2, 1, 2, 1]


def test_ranks_and_spearman_by_hand():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    assert ranks(x).tolist() == [3.0, 1.5, 4.0, 1.5, 5.0]
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, 9).astype(float), rng.normal(size=9)
        ra = np.array([(a < v).sum() + ((a == v).sum() + 1) / 2 for v in a])  # average rank, by counting
        rb = np.array([(b < v).sum() + ((b == v).sum() + 1) / 2 for v in b])
        want = np.corrcoef(ra, rb)[0, 1] if ra.std() > 0 else math.nan
        got = spearman(a, b)
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-12)
    assert spearman(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.ones(4), np.arange(4)))


def test_headline_counts_by_hand():
    from marginal.analysis.regimes import BankStats

    st = BankStats(
        np.array([0.2, 0.1, -0.2, -0.1, 0.0]),
        np.array([0.1, 0.05, -0.3, -0.2, -0.1]),
        np.array([0.3, 0.2, -0.1, -0.05, 0.1]),
        np.zeros(5, int),
        np.ones(5, int),
        np.array([[0.5], [0.4], [0.3], [0.6], [0.5]]),
        np.array([[0.4], [0.4], [0.5], [0.5], [0.5]]),
        np.array([[0.2], [-0.1], [-0.3], [0.0], [0.05]]),
    )
    h = headline(st)[0]
    assert h[0] == 0.5 and h[1] == 2  # CI > 0: gains +0.1 (win) and 0 (a tie is no win)
    assert h[2] == 0.5 and h[3] == 2  # CI < 0: gains -0.2 (repetition wins) and +0.1
    assert h[4] == pytest.approx(spearman(st.lam, st.gain[:, 0]))
    # calibration gain > 0 for banks 0, 4 (held-out gains +0.1: win, 0: no win); < 0 for 1, 2 (0: no win, -0.2: win)
    assert h[5] == 0.5 and h[6] == 2 and h[7] == 0.5 and h[8] == 2
    assert h[9] == pytest.approx(spearman(st.cal_gain[:, 0], st.gain[:, 0]))


def test_regime_test_end_to_end(tmp_path):
    pool = skewed_pool(2, N=20, P=6)
    rt = regime_test(pool, n_banks=30, n_boot=60, inner_boot=300, seed=1)
    again = regime_test(pool, n_banks=30, n_boot=60, inner_boot=300, seed=1)
    assert rt.results == again.results and rt.banks == again.banks  # seeded
    assert len(rt.banks) == 30 and len(rt.calib) == len(rt.held_out) == 10
    st = rt.stats
    for b, res in enumerate(rt.results):
        pos = st.lo > 0
        assert res.diversity_wins.n == pos.sum()
        if pos.any():
            assert res.diversity_wins.value == pytest.approx((st.gain[pos, b] > 0).mean())
            assert res.diversity_wins.defined > 0
        assert res.spearman.value == pytest.approx(spearman(st.lam, st.gain[:, b]), nan_ok=True)
        up = st.cal_gain[:, b] > 0
        assert res.calibration_diversity_wins.n == up.sum()
        if up.any():
            assert res.calibration_diversity_wins.value == pytest.approx((st.gain[up, b] > 0).mean())
        lo, hi = res.spearman.ci
        assert math.isnan(lo) or lo <= hi
    d = json.loads(json.dumps(rt.to_dict()))
    assert d["n_banks"] == 30 and set(d["results"]) == {"4", "8"}
    ex = pick_examples(rt)
    for name, bank in ex.items():
        if bank is not None:
            assert rt.regime(rt.banks.index(bank)) == name
    aligned = [s for s in range(30) if rt.regime(s) == "aligned"]
    if aligned:
        assert st.lo[rt.banks.index(ex["aligned"])] == max(st.lo[aligned])


def test_regime_test_needs_labels_and_problems():
    pool = pool_from_lists([[["1"]] * 5] * 3, None)
    with pytest.raises(MarginalError, match="needs gold"):
        regime_test(pool)
    with pytest.raises(MarginalError, match="at least 4 labelled problems"):
        regime_test(pool_from_lists([[["1"]] * 5] * 3, ["1"] * 3))


def test_plots_write_pngs(tmp_path):
    from marginal.regime_plots import plot_regime_scatter, plot_sub_bank

    pool = skewed_pool(3, N=12)
    rt = regime_test(pool, n_banks=10, n_boot=20, inner_boot=100)
    for path in (
        plot_regime_scatter(rt, tmp_path / "s.png"),
        plot_sub_bank(pool, rt.banks[0], tmp_path / "b.png", 8, title="t"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- experiments/regimes/adaptive.py on a synthetic ragged pool -------------------------


def _adaptive_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "regimes" / "adaptive.py"
    spec = importlib.util.spec_from_file_location("regimes_adaptive", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _ragged_store(path, deep: int, seed=0, N=14, P=4):
    """4 priors x 8 samples, the first prior and the best one grown to ``deep`` (as --grow leaves a pool)."""
    from marginal.store import Store
    from marginal.types import Prior, Problem, Sample

    rng = np.random.default_rng(seed)
    st = Store(path)
    probs = [Problem(f"q{i}", "q", "1") for i in range(N)]
    st.create_run("r", {"task": "toy", "model": "fake"}, probs, [Prior(f"c{c}") for c in range(P)], "0")
    skill = [0.35, 0.5, 0.7, 0.45]
    rows = [
        Sample(p.id, f"c{c}", i, a, a, a == "1", None)
        for p in probs
        for c in range(P)
        for i in range(deep if c in (0, 2) else 8)
        for a in [str(rng.choice(["1", "2", "3"], p=[skill[c], (1 - skill[c]) * 0.6, (1 - skill[c]) * 0.4]))]
    ]
    st.add_samples("r", rows)
    st.close()


def test_adaptive_evaluation_pairs_replay_grid_and_repetition(tmp_path):
    from marginal.analysis import load_pool, split_problems, sub_bank
    from marginal.policies import Adaptive
    from marginal.replay import replay

    ad = _adaptive_module()
    _ragged_store(tmp_path / "p.db", deep=32)
    res = ad.evaluate(str(tmp_path / "p.db"), [16], [0.95], n_boot=300)
    bank = res["orders"]["bank"]
    assert bank["best_single_prior_hindsight"] == "c2" and bank["repetition_depth"] == {"c0": 32, "c2": 32}
    e = bank["budgets"]["16"]
    assert e["best_fixed"]["accuracy"] == max(e["fixed"].values())  # 2x8, 4x4 (K <= 4 priors, M <= 8)
    assert set(e["fixed"]) == {"2x8", "4x4"}
    a = e["adaptive"]["adaptive 0.95"]
    r = replay(tmp_path / "p.db", Adaptive(threshold=0.95), 16)
    assert a["measurable"] and r.exhausted == 0  # every request inside the pool: the accuracy is the replay's
    assert a["accuracy"] == pytest.approx(r.accuracy) and a["mean_samples"] == pytest.approx(r.mean_used)
    assert a["minus_best_fixed"]["diff"] == pytest.approx(r.accuracy - e["best_fixed"]["accuracy"])
    rep = a["repetition_at_equal_samples"]["c2"]
    assert rep["measurable"] and rep["ci"][0] <= rep["diff"] <= rep["ci"][1]
    # the calibrated order: priors by accuracy on the calibration half, everything scored on the other half
    cal = res["orders"]["calibrated"]
    pool = load_pool(tmp_path / "p.db")
    c_idx, t_idx = split_problems(pool.n_problems, 0.5, 0)
    acc = pool.correct_samples()[c_idx, :, :8].mean(axis=(0, 2))  # the first 8 samples: growth leaves it alone
    assert cal["priors"] == [pool.priors[i] for i in np.argsort(-acc, kind="stable")]
    assert cal["problems"] == len(t_idx) == res["problems"] - res["calibration_problems"]
    held = {pool.problems[i] for i in t_idx}
    r2 = replay(tmp_path / "p.db", Adaptive(threshold=0.95), 16, priors=cal["priors"])
    want = np.mean([c for c, p in zip(r2.credit, r2.problems) if p in held])
    assert cal["budgets"]["16"]["adaptive"]["adaptive 0.95"]["accuracy"] == pytest.approx(want)
    fixed = ad.accuracy_grid(sub_bank(pool, cal["priors"]).subset(t_idx), 16)
    assert cal["budgets"]["16"]["fixed"]["4x4"] == pytest.approx(fixed.acc[:, fixed.cells.index((4, 4))].mean())
    # a shallow pool (8 per prior) is not measurable where adaptive wants a 9th sample of a prior
    _ragged_store(tmp_path / "s.db", deep=8, seed=1)
    shallow = ad.evaluate(str(tmp_path / "s.db"), [32], [0.95], n_boot=100)["orders"]["bank"]
    shallow = shallow["budgets"]["32"]["adaptive"]["adaptive 0.95"]
    assert shallow["exhausted"] > 0 and not shallow["measurable"] and not shallow["goal_within_1_point"]
    assert ad.main([str(tmp_path / "p.db"), "--order"]) == 0


def test_repetition_curve_read_between_samples():
    ad = _adaptive_module()
    curve = np.array([[0.2, 0.4, 0.5], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(ad.at_samples(curve, 2.5), [0.45, 0.5])
    np.testing.assert_allclose(ad.at_samples(curve, 3.0), [0.5, 0.0])
    assert ad.at_samples(curve, 3.2) is None and ad.at_samples(curve, 0.5) is None
