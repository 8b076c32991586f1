"""Growing a pool for a policy: stored samples are reused, missing ones generated with their seeds."""

from __future__ import annotations

from importlib.resources import files

from marginal.backends.llamacpp import LlamaCppBackend
from marginal.grow import grow_for_policy
from marginal.models import bundled_model_path
from marginal.policies import Fixed
from marginal.replay import replay
from marginal.runner import RunPlan, execute
from marginal.store import Store
from marginal.tasks import load_task
from marginal.types import SampleSpec


def test_grow_generates_only_what_the_pool_lacks(tmp_path):
    task = load_task(f"jsonl:{files('marginal') / 'data' / 'demo.jsonl'}")
    plan = RunPlan(
        task.name,
        "smollm2-135m",
        SampleSpec(n=2, max_tokens=8, seed=0),
        tuple(task.bank()[:2]),
        tuple(task.problems()[:3]),
    )
    db = tmp_path / "pool.db"
    with LlamaCppBackend(bundled_model_path(), n_ctx=2048, max_seqs=4, n_threads=1) as b:
        store = Store(db)
        rid = execute(plan, task, lambda prior: b, store)
        before = {(s.problem_id, s.prior, s.index): s.seed for s in store.samples(rid)}
        assert replay(db, Fixed(1, 4), 4).exhausted == 3  # the pool holds 2 samples per prior
        states, added = grow_for_policy(store, rid, Fixed(1, 4), 4, lambda prior: b)
        after = {(s.problem_id, s.prior, s.index): s.seed for s in store.samples(rid)}
        assert added == 3 * 2 and len(after) == len(before) + 6
        assert all(after[k] == v for k, v in before.items())  # stored samples untouched, reused
        assert {k[2] for k in after if k[1] == plan.priors[0].name} == {0, 1, 2, 3}
        assert all(len(st.samples) == 4 for st in states)
        _, again = grow_for_policy(store, rid, Fixed(1, 4), 4, lambda prior: b)
        assert again == 0  # everything the policy asks for is now in the pool
        store.close()
        # the grown samples carry the seeds a live run of the same prompts would draw
        fresh = b.generate(
            [plan.priors[0].render(p.question) for p in plan.problems],
            SampleSpec(n=2, max_tokens=8, seed=0, first_index=2),
        )
    grown = {k: v for k, v in after.items() if k not in before}
    assert sorted(grown.values()) == sorted(c.seed for row in fresh for c in row)
    r = replay(db, Fixed(1, 4), 4)
    assert r.exhausted == 0 and r.mean_used == 4
