"""Blend diagnostics: Wilson intervals, correlations against brute force, and
the store's diagnostic columns (older files gain them on open)."""

import math
import sqlite3

import numpy as np
import pytest

from marginal.analysis.blend import blend_rows, correlation, wilson
from marginal.store import BLEND_COLUMNS, Store
from marginal.types import Problem, Prior, Sample


def test_wilson_matches_the_closed_form_and_brackets_p():
    lo, hi = wilson(7, 10)
    # Wilson (1927) for 7/10, z = 1.96: [0.3968, 0.8922]
    assert lo == pytest.approx(0.3968, abs=1e-4) and hi == pytest.approx(0.8922, abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))


def _spearman_no_ties(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    n = len(x)
    return 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))


def test_correlation_against_brute_force():
    rng = np.random.default_rng(0)
    for n in (3, 5, 9):
        x, y = rng.random(n), rng.random(n)
        c = correlation(x, y)
        assert c.n == n
        assert c.pearson == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
        assert c.spearman == pytest.approx(_spearman_no_ties(x, y), abs=1e-12)
    # Ties get average ranks: Spearman is then Pearson of the average ranks.
    x, y = [0.1, 0.1, 0.3, 0.5], [0.2, 0.4, 0.4, 0.9]
    assert correlation(x, y).spearman == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2.5, 2.5, 4])[0, 1])
    assert correlation(x, [-v for v in y]).pearson == pytest.approx(-correlation(x, y).pearson)
    assert math.isnan(correlation([1, 2], [3, 4]).pearson)  # too few points
    assert math.isnan(correlation([1, 1, 1], [0, 1, 0]).pearson)  # constant rates


def _sample(pid, i, correct, **blend):
    return Sample(problem_id=pid, prior="default", index=i, text="t", answer="1" if correct is not None else None,
                  correct=correct, error=None if correct is not None else "no answer", **blend)


def test_diagnostics_round_trip_and_rows(tmp_path):
    db = tmp_path / "b.db"
    s = Store(db)
    probs = [Problem(id=f"p{i}", question="q", answer="1") for i in range(3)]
    for rid, model, rates in (("r1", "blend:a+b:variant=blend,gamma=0.3", (0.1, 0.3, 0.2)),
                              ("r2", "blend:a+b:variant=always,gamma=1", (1, 1, 1))):
        s.create_run(rid, {"task": "t", "model": model}, probs, [Prior("default")], "0")
        s.add_samples(rid, [
            _sample("p0", 0, True, interventions=1, intervention_rate=rates[0], mean_alpha=0.5, topk_overlap=0.4, retokenized=0),
            _sample("p1", 0, False, interventions=3, intervention_rate=rates[1], mean_alpha=0.7, topk_overlap=0.2, retokenized=1),
            _sample("p2", 0, None, interventions=0, intervention_rate=rates[2], mean_alpha=None, topk_overlap=None, retokenized=0),
        ])
    got = {x.problem_id: x for x in s.samples("r1")}
    assert got["p1"].interventions == 3 and got["p1"].mean_alpha == 0.7 and got["p2"].mean_alpha is None
    s.close()
    rows = blend_rows(db)
    assert [(r.variant, r.gamma) for r in rows] == [("blend", 0.3), ("always", 1.0)]
    r = rows[0]
    assert (r.samples, r.graded, r.correct, r.failed, r.retokenized) == (3, 3, 1, 1, 1)  # the failed one counts as wrong
    assert r.intervention_rate == pytest.approx(0.2) and r.mean_alpha == pytest.approx(0.6) and r.accuracy == pytest.approx(1 / 3)


def test_an_older_file_gains_the_columns_and_keeps_its_samples(tmp_path):
    db = tmp_path / "old.db"
    s = Store(db)
    s.create_run("r", {"task": "t", "model": "m"}, [Problem(id="p", question="q", answer="1")], [Prior("default")], "0")
    s.add_samples("r", [_sample("p", 0, True)])
    s.close()
    with sqlite3.connect(db) as c:  # make it look like a file written before the diagnostics existed
        for col in BLEND_COLUMNS:
            c.execute(f"ALTER TABLE samples DROP COLUMN {col}")
    ro = Store(db, readonly=True)
    assert [x.correct for x in ro.samples("r")] == [True] and ro.samples("r")[0].interventions is None
    ro.close()
    assert blend_rows(db) == []
    s = Store(db)
    assert set(BLEND_COLUMNS) <= s.columns
    s.add_samples("r", [_sample("p", 1, False, interventions=2, intervention_rate=0.5)])
    assert [(x.index, x.interventions) for x in s.samples("r")] == [(0, None), (1, 2)]
    s.close()
