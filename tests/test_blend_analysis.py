"""Blend diagnostics: Wilson intervals, correlations against brute force, and
the store's generic diagnostic columns (files written before they were generic,
with the five blend columns, keep reading)."""

import math
import sqlite3

import numpy as np
import pytest

from marginal.analysis.blend import blend_rows, correlation, wilson
from marginal.blend.completion import DIAGNOSTICS as BLEND_COLUMNS
from marginal.store import Store
from marginal.types import Prior, Problem, Sample


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
    return Sample(
        problem_id=pid,
        prior="default",
        index=i,
        text="t",
        answer="1" if correct is not None else None,
        correct=correct,
        error=None if correct is not None else "no answer",
        diagnostics=blend,
    )


def test_diagnostics_round_trip_and_rows(tmp_path):
    db = tmp_path / "b.db"
    s = Store(db)
    probs = [Problem(id=f"p{i}", question="q", answer="1") for i in range(3)]
    for rid, model, rates in (
        ("r1", "blend:a+b:variant=blend,gamma=0.3", (0.1, 0.3, 0.2)),
        ("r2", "blend:a+b:variant=always,gamma=1", (1, 1, 1)),
    ):
        s.create_run(rid, {"task": "t", "model": model}, probs, [Prior("default")], "0")
        s.add_samples(
            rid,
            [
                _sample(
                    "p0",
                    0,
                    True,
                    interventions=1,
                    intervention_rate=rates[0],
                    mean_alpha=0.5,
                    topk_overlap=0.4,
                    retokenized=0,
                ),
                _sample(
                    "p1",
                    0,
                    False,
                    interventions=3,
                    intervention_rate=rates[1],
                    mean_alpha=0.7,
                    topk_overlap=0.2,
                    retokenized=1,
                ),
                _sample(
                    "p2",
                    0,
                    None,
                    interventions=0,
                    intervention_rate=rates[2],
                    mean_alpha=None,
                    topk_overlap=None,
                    retokenized=0,
                ),
            ],
        )
    got = {x.problem_id: x for x in s.samples("r1")}
    assert got["p1"].diagnostics["interventions"] == 3 and got["p1"].diagnostics["mean_alpha"] == 0.7
    assert got["p2"].diagnostics.get("mean_alpha") is None
    s.close()
    rows = blend_rows(db)
    assert [(r.variant, r.gamma) for r in rows] == [("blend", 0.3), ("always", 1.0)]
    r = rows[0]
    assert (r.samples, r.graded, r.correct, r.failed, r.retokenized) == (
        3,
        3,
        1,
        1,
        1,
    )  # the failed one counts as wrong
    assert (
        r.intervention_rate == pytest.approx(0.2)
        and r.mean_alpha == pytest.approx(0.6)
        and r.accuracy == pytest.approx(1 / 3)
    )


def test_a_file_gains_a_diagnostic_column_when_a_sample_first_carries_it(tmp_path):
    db = tmp_path / "old.db"
    s = Store(db)
    s.create_run("r", {"task": "t", "model": "m"}, [Problem(id="p", question="q", answer="1")], [Prior("default")], "0")
    s.add_samples("r", [_sample("p", 0, True)])
    assert s.diagnostic_names() == () and not set(BLEND_COLUMNS) & s.columns  # the store names no diagnostic
    s.close()
    ro = Store(db, readonly=True)
    assert [x.correct for x in ro.samples("r")] == [True] and ro.samples("r")[0].diagnostics.get(
        "interventions"
    ) is None
    ro.close()
    assert blend_rows(db) == []
    s = Store(db)
    s.add_samples("r", [_sample("p", 1, False, interventions=2, intervention_rate=0.5)])
    assert {"interventions", "intervention_rate"} <= s.columns
    assert s.diagnostic_names() == ("interventions", "intervention_rate")
    assert [(x.index, x.diagnostics.get("interventions")) for x in s.samples("r")] == [(0, None), (1, 2)]
    with pytest.raises(ValueError, match="lower-case identifier"):
        s.add_samples("r", [_sample("p", 2, True, **{"text": 1})])
    s.close()


def _legacy_file(db):
    """A file in the layout before diagnostics were generic: the five blend columns in the samples table."""
    s = Store(db)
    s.create_run(
        "r",
        {"task": "t", "model": "blend:a+b:variant=blend,gamma=0.3"},
        [Problem(id=f"p{i}", question="q", answer="1") for i in range(2)],
        [Prior("default")],
        "0",
    )
    s.close()
    types = {
        "interventions": "INTEGER",
        "intervention_rate": "REAL",
        "mean_alpha": "REAL",
        "topk_overlap": "REAL",
        "retokenized": "INTEGER",
    }
    with sqlite3.connect(db) as c:
        for col, kind in types.items():
            c.execute(f"ALTER TABLE samples ADD COLUMN {col} {kind}")
        c.execute(
            "INSERT INTO samples VALUES ('r','p0','default',0,'t','1',1,NULL,1,2,0,0.0,'stop',0,0.0,0.0,"
            "4,0.5,0.25,0.75,1)"
        )
        c.execute(
            "INSERT INTO samples VALUES ('r','p1','default',0,'t',NULL,NULL,'no answer',1,2,0,0.0,'stop',0,0.0,"
            "0.0,0,0.0,NULL,NULL,0)"
        )


def test_a_file_with_the_five_blend_columns_reads_them_as_diagnostics(tmp_path):
    db = tmp_path / "legacy.db"
    _legacy_file(db)
    ro = Store(db, readonly=True)
    assert ro.diagnostic_names() == BLEND_COLUMNS
    a, b = ro.samples("r")
    assert a.diagnostics == {
        "interventions": 4,
        "intervention_rate": 0.5,
        "mean_alpha": 0.25,
        "topk_overlap": 0.75,
        "retokenized": 1,
    }
    assert b.diagnostics == {"interventions": 0, "intervention_rate": 0.0, "retokenized": 0}
    with open(ro.export("r", tmp_path / "x.jsonl")) as fh:
        rows = [__import__("json").loads(line) for line in fh]
    assert [r["topk_overlap"] for r in rows] == [0.75, None] and list(rows[0])[-5:] == list(BLEND_COLUMNS)
    ro.close()
    (r,) = blend_rows(db)
    assert (r.samples, r.graded, r.correct, r.failed, r.retokenized) == (2, 2, 1, 1, 1)
    assert r.intervention_rate == pytest.approx(0.25) and r.mean_alpha == pytest.approx(0.25)
    s = Store(db)  # a resumed blend run appends to the same columns
    s.add_samples("r", [_sample("p0", 1, True, interventions=1, intervention_rate=0.1, mean_alpha=None)])
    assert [x.diagnostics.get("interventions") for x in s.samples("r")] == [4, 1, 0]
    assert s.diagnostic_names() == BLEND_COLUMNS
    s.close()


def test_stored_blend_pools_keep_reading():
    from pathlib import Path

    pools = sorted((Path(__file__).resolve().parents[1] / "experiments" / "blend" / "pools").glob("*.db"))
    if not pools:
        pytest.skip("no stored blend pools in this checkout")
    for db in pools:
        rows = blend_rows(db)
        assert rows and all(r.samples > 0 and 0 <= r.intervention_rate <= 1 for r in rows)
        ro = Store(db, readonly=True)
        assert ro.diagnostic_names() == BLEND_COLUMNS
        samples = ro.samples(rows[0].run_id, decode=False)
        assert all("interventions" in s.diagnostics for s in samples)
        ro.close()
