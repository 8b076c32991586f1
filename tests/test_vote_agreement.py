"""One vote everywhere: the live vote, the replay and the exact grid agree on every cell (brute force).

A deterministic fake backend answers small pools (ties, failed samples and
all-failed cells included). For every cell (K, M):

- live: ``Session.solve_many`` with ``Fixed(K, M)`` (sample i of a
  (question, prior) always has the same seed, so it draws the first M
  samples of the first K priors of the stored pool);
- replay: ``marginal.replay.replay`` of ``Fixed(K, M)`` on the stored pool;
- grid: ``accuracy_grid`` (exact) and ``brute_force_accuracy`` on the pool
  cut to those M samples, where the draw is the whole cell;

and on the whole pool, the grid's expectation over M-subsets equals the mean
of ``marginal.vote.credit`` over every M-subset, enumerated on the strings.
"""

from dataclasses import replace
from itertools import combinations, product

import numpy as np
import pytest
from fakes import FakeBackend, FakeTask

from marginal.allocate import execute_policy
from marginal.analysis import accuracy_grid, brute_force_accuracy, load_pool
from marginal.policies import Adaptive, Decision, Fixed
from marginal.replay import replay, replay_question
from marginal.runner import RunPlan
from marginal.session import Session
from marginal.store import Store
from marginal.types import Problem, SampleSpec
from marginal.vote import TIES, credit, tally, winner

PRIORS = ["c0", "c1", "c2"]
# "?" is unreadable: a failed sample. c2 often ties "1" against "2".
DISTS = {
    "c0": {"1": 0.45, "2": 0.35, "?": 0.2},
    "c1": {"2": 0.5, "3": 0.3, "1": 0.2},
    "c2": {"1": 0.4, "2": 0.4, "?": 0.2},
}
GOLD = "1"
N_SLOTS = 3


SPEC = SampleSpec(n=1, temperature=0.7, max_tokens=8)


def _session(dists=DISTS):
    return Session(FakeBackend(dists), FakeTask(list(dists), unreadable={"?"}), spec=SPEC)


def _problems(n=24):
    return [Problem(f"p{i:02d}", f"question {i}", GOLD) for i in range(n)]


def _store(path, results, problems, priors):
    s = Store(path)
    s.create_run("r", {}, problems, priors, "0")
    s.add_samples("r", [smp for r in results for smp in r.samples])
    s.close()


@pytest.fixture(scope="module")
def pool_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("agree") / "pool.db"
    problems = _problems()
    with _session() as s:
        full = s.solve_many(problems, budget=len(PRIORS) * N_SLOTS, policy=Fixed(len(PRIORS), N_SLOTS))
        _store(path, full, problems, s.priors)
    return path, problems, full


def _cells_answers(full):
    """[problem][prior] answers in index order, from the live full run."""
    out = []
    for r in full:
        by = {c: sorted((x for x in r.samples if x.prior == c), key=lambda x: x.index) for c in PRIORS}
        out.append([[x.answer for x in by[c]] for c in PRIORS])
    return out


def test_the_pool_has_ties_and_failed_samples(pool_db):
    _, _, full = pool_db
    answers = _cells_answers(full)
    assert any(a is None for p in answers for c in p for a in c)
    two = [tally([c[:2] for c in p[:1]]) for p in answers]
    assert any(len(v) == 2 and len(set(v.values())) == 1 for v in two)  # a 1:1 tie somewhere
    assert any(not tally([p[0][:1]]) for p in answers)  # an all-failed K=1, M=1 cell


@pytest.mark.parametrize("k,m", [(k, m) for k in range(1, 4) for m in range(1, N_SLOTS + 1)])
def test_live_replay_and_grid_agree_on_every_cell(pool_db, k, m):
    path, problems, full = pool_db
    with _session() as s:
        live = s.solve_many(problems, budget=k * m, policy=Fixed(k, m))
    live_credit = [credit(r.shares, GOLD) for r in live]
    answers = _cells_answers(full)
    for r, a in zip(live, answers):  # the live run drew the first M samples of the first K priors
        assert sorted((x.prior, x.index) for x in r.samples) == sorted((c, i) for c in PRIORS[:k] for i in range(m))
        counts = tally([c[:m] for c in a[:k]])
        assert r.answer == winner(counts) and r.correct == (None if r.answer is None else r.answer == GOLD)
    rep = replay(path, Fixed(k, m), k * m)
    assert list(rep.credit) == live_credit and rep.exhausted == 0
    pool = load_pool(path)
    cut = replace(pool, answers=pool.answers[:, :, :m])
    for ties in TIES:
        want = [credit(tally([c[:m] for c in a[:k]]), GOLD, ties) for a in answers]
        grid = accuracy_grid(cut, k * m, cells=((k, m),), method="exact", ties=ties)
        np.testing.assert_allclose(grid.acc[:, 0], want, atol=1e-12)
        np.testing.assert_allclose(brute_force_accuracy(cut, k, m, ties=ties), want, atol=1e-12)
        if ties == "split":
            np.testing.assert_allclose(want, live_credit, atol=1e-12)


@pytest.mark.parametrize("ties", TIES)
def test_grid_expectation_is_the_mean_string_vote_over_subsets(pool_db, ties):
    path, _, full = pool_db
    pool = load_pool(path)
    answers = _cells_answers(full)
    grid = accuracy_grid(pool, method="exact", ties=ties)
    for j, (k, m) in enumerate(grid.cells):
        want = []
        for a in answers:
            subsets = [list(combinations(c, min(m, len(c)))) for c in a[:k]]
            want.append(np.mean([credit(tally(draw), GOLD, ties) for draw in product(*subsets)]))
        np.testing.assert_allclose(grid.acc[:, j], want, atol=1e-12, err_msg=f"K={k}, M={m}")


def test_adaptive_live_run_replays_to_the_same_decisions_and_credit(tmp_path):
    """Live adaptive decisions equal the replay's on the stored grid of the same seeds."""
    problems = _problems(16)
    budget, depth = 8, 8  # no prior can be asked for more than 8: the replay never runs out
    with _session() as s:
        full = s.solve_many(problems, budget=len(PRIORS) * depth, policy=Fixed(len(PRIORS), depth))
        _store(tmp_path / "deep.db", full, problems, s.priors)
        live = s.solve_many(problems, budget=budget, policy=Adaptive())
    rep = replay(tmp_path / "deep.db", Adaptive(), budget)
    assert rep.exhausted == 0 and list(rep.credit) == [credit(r.shares, GOLD) for r in live]
    for r, a in zip(live, _cells_answers(full)):
        q = replay_question(Adaptive(), a, budget)
        assert q.decisions == r.decisions and not q.exhausted
        assert q.stop_kind == r.decisions[-1].stop_kind


def test_policy_run_stores_typed_decisions_and_resumes_identically(tmp_path):
    task = FakeTask(PRIORS, unreadable={"?"})
    be = FakeBackend(DISTS)
    spec = SPEC
    plan = RunPlan("fake", "fake", spec, tuple(task.bank()), tuple(_problems(6)), {"name": "adaptive", "budget": 8})
    db = Store(tmp_path / "run.db")
    run_id = execute_policy(plan, Adaptive(), 8, task, lambda p: be, db)
    rows = db.decisions(run_id)
    with Session(be, task, spec=spec) as s:
        live = {p.id: r for p, r in zip(plan.problems, s.solve_many(list(plan.problems), budget=8, policy=Adaptive()))}
    stored: dict[str, list[Decision]] = {}
    for pid, _, req, reason, detail in rows:
        stored.setdefault(pid, []).append(Decision.from_record(req, reason, detail))
    assert stored == {pid: list(r.decisions) for pid, r in live.items()}
    n_samples = db.count(run_id)
    execute_policy(plan, Adaptive(), 8, task, lambda p: be, db)  # resume: replays, adds nothing
    assert db.decisions(run_id) == rows and db.count(run_id) == n_samples
    db.close()


def test_decisions_of_an_older_file_still_load(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:  # the decisions table as written before typed fields
        c.execute(
            "CREATE TABLE decisions (run_id TEXT NOT NULL, problem_id TEXT NOT NULL, used INTEGER NOT NULL, "
            "requests TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (run_id, problem_id, used))"
        )
        c.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL, "
            "code_version TEXT NOT NULL)"
        )
        c.execute("INSERT INTO decisions VALUES ('r', 'p0', 0, '[[0, 2], [1, 2]]', 'probe 2 priors x 2 samples')")
        c.execute("INSERT INTO decisions VALUES ('r', 'p0', 4, '[]', 'budget spent')")
    ro = Store(path, readonly=True)
    assert ro.decisions("r") == [
        ("p0", 0, [[0, 2], [1, 2]], "probe 2 priors x 2 samples", None),
        ("p0", 4, [], "budget spent", None),
    ]
    ro.close()
    rw = Store(path)  # opening for writing adds the column; old rows keep NULL
    rw.add_samples(
        "r", [], [("p1", 0, "[]", "budget spent", Decision((), "budget spent", stop_kind="budget spent").record())]
    )
    got = [Decision.from_record(req, why, d) for _, _, req, why, d in rw.decisions("r")]
    rw.close()
    assert got[0].kind is None and got[0].requests == ((0, 2), (1, 2))
    assert got[1] == Decision((), "budget spent") and got[2].stop_kind == "budget spent"
