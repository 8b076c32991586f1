"""RunConfig: checked when built, resolved by build_plan, rebuilt from a stored run (resume);
the Store summaries the CLI reads (no model needed)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fakes import FakeBackend

from marginal.allocate import execute_policy
from marginal.config import (
    PolicySettings,
    ProblemSelection,
    RaySettings,
    RunConfig,
    TaskSource,
    build_plan,
    make_run_policy,
)
from marginal.errors import MarginalError
from marginal.policies import make_policy
from marginal.runner import execute
from marginal.store import Store
from marginal.types import SampleSpec

BANK = "- name: a\n  system: 'tag:a'\n- name: b\n  system: 'tag:b'\n- name: c\n  system: 'tag:c'\n"
DISTS = {"a": {"42": 0.7, "41": 0.3}, "b": {"42": 0.4, "7": 0.6}, "c": {"1": 1.0}}


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": "42"}) + "\n" for i in range(6)))
    bank = tmp_path / "bank.yaml"
    bank.write_text(BANK)
    return f"jsonl:{data}", bank


def test_build_plan_resolves_priors_samples_and_problems(files):
    task, bank = files
    cfg = RunConfig(
        TaskSource(task),
        priors="a,c",
        priors_file=bank,
        budget=6,
        sampling=SampleSpec(temperature=0.5, max_tokens=12, seed=3),
        problems=ProblemSelection(limit=3, subset_seed=1),
    )
    t, plan = build_plan(cfg)
    assert [c.name for c in plan.priors] == ["a", "c"] and plan.spec.n == 3
    assert (plan.spec.temperature, plan.spec.max_tokens, plan.spec.seed) == (0.5, 12, 3)
    assert len(plan.problems) == 3 and plan.problems != tuple(t.problems()[:3]) and plan.policy is None
    assert build_plan(RunConfig(TaskSource(task), priors="3", priors_file=bank))[1].spec.n == 4  # the default M
    with pytest.raises(MarginalError, match="--priors 4 asks for more"):  # the default K
        build_plan(RunConfig(TaskSource(task), priors_file=bank))
    assert len(build_plan(RunConfig(TaskSource(task), priors="2", priors_file=bank, samples=2))[1].priors) == 2
    pol = RunConfig(TaskSource(task), priors_file=bank, policy=PolicySettings("repetition", 4))
    _, pplan = build_plan(pol)
    assert (
        len(pplan.priors) == 3
        and pplan.spec.n == 1
        and pplan.policy == {"name": "repetition", "budget": 4, "threshold": 0.95}
    )
    assert make_run_policy(pol, pplan).name == make_policy("repetition", 4, 3).name
    assert make_run_policy(cfg, plan) is None
    for bad, msg in (
        ({"priors": "2", "budget": 5}, "not a multiple of the 2 priors"),
        ({"priors": "2", "budget": 4, "samples": 3}, "!= 2 priors x --samples 3"),
        ({"priors": "2", "samples": 2, "sampling": SampleSpec(temperature=0.0)}, "greedy"),
    ):
        with pytest.raises(MarginalError, match=msg):
            build_plan(RunConfig(TaskSource(task), priors_file=bank, **bad))


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"budget": 0}, "--budget must be a positive integer"),
        ({"samples": -1}, "--samples must be a positive integer"),
        ({"batch_samples": 0}, "--batch-samples must be a positive integer"),
        ({"sampling": SampleSpec(n=2)}, "sampling.n must be 1"),
        ({"policy": PolicySettings("adaptive", 8), "ray": RaySettings()}, "--ray runs K x M grids"),
        ({"policy": PolicySettings("adaptive", 8), "budget": 8}, "a policy run's budget"),
    ],
)
def test_bad_configs_are_refused_when_built(kwargs, msg):
    with pytest.raises(MarginalError, match=msg):
        RunConfig(TaskSource("gsm8k"), **kwargs)


def test_bad_selections_and_policies_are_refused_when_built():
    with pytest.raises(MarginalError, match="give --limit"):
        ProblemSelection(subset_seed=3)
    with pytest.raises(MarginalError, match="--limit must be a positive integer"):
        ProblemSelection(limit=0)
    with pytest.raises(MarginalError, match="--budget must be a positive integer"):
        PolicySettings("adaptive", 0)
    assert ProblemSelection(subset_seed=3, ids=("x",)).ids == ("x",)  # a resumed run's own problems


def test_from_store_rebuilds_a_grid_run_and_resume_may_grow_it(files, tmp_path):
    task, bank = files
    cfg = RunConfig(
        TaskSource(task),
        priors="a,b",
        priors_file=bank,
        samples=3,
        sampling=SampleSpec(temperature=0.5, max_tokens=12, seed=4),
        problems=ProblemSelection(limit=3, subset_seed=1),
    )
    t, plan = build_plan(cfg)
    store = Store(tmp_path / "r.db")
    rid = execute(plan, t, lambda _p: FakeBackend(DISTS), store)
    stored = RunConfig.from_store(store, rid)
    assert (stored.task.name, stored.model, stored.sampling, stored.samples) == (
        plan.task,
        "smollm2-135m",
        cfg.sampling,
        3,
    )
    assert (
        stored.priors == "a,b" and stored.problems.ids == tuple(p.id for p in plan.problems) and stored.policy is None
    )
    # the command line may change files, batching and threads, not what decides the samples
    given = RunConfig(
        TaskSource("ignored", question_field="question"),
        priors="a,b",
        priors_file=bank,
        batch_samples=5,
        threads=2,
        sampling=SampleSpec(temperature=0.9),
        problems=ProblemSelection(limit=1),
    )
    resumed = stored.resume_with(given)
    assert (resumed.batch_samples, resumed.threads, resumed.priors_file) == (5, 2, bank)
    _, again = build_plan(resumed)
    assert again.run_id == plan.run_id and again.problems == plan.problems and again.spec == plan.spec
    grown = stored.resume_with(RunConfig(TaskSource("x"), priors="a,b", priors_file=bank, samples=5))
    assert build_plan(grown)[1].spec.n == 5
    by_budget = stored.resume_with(RunConfig(TaskSource("x"), priors="a,b", priors_file=bank, budget=8))
    assert build_plan(by_budget)[1].spec.n == 4
    store.close()


def test_from_store_keeps_a_policy_run_policy(files, tmp_path):
    task, bank = files
    cfg = RunConfig(
        TaskSource(task),
        priors_file=bank,
        policy=PolicySettings("repetition", 4, threshold=0.9),
        problems=ProblemSelection(limit=2),
    )
    t, plan = build_plan(cfg)
    store = Store(tmp_path / "p.db")
    rid = execute_policy(plan, make_run_policy(cfg, plan), 4, t, lambda _p: FakeBackend(DISTS), store)
    stored = RunConfig.from_store(store, rid)
    assert stored.policy == PolicySettings("repetition", 4, 0.9)
    resumed = stored.resume_with(RunConfig(TaskSource("x"), priors="all", priors_file=bank, samples=9))
    assert resumed.policy == stored.policy and resumed.budget is None
    assert build_plan(resumed)[1].run_id == plan.run_id
    store.close()


def test_store_summaries_match_the_samples(files, tmp_path):
    task, bank = files
    cfg = RunConfig(TaskSource(task), priors="a,b,c", priors_file=bank, samples=3, problems=ProblemSelection(limit=4))
    t, plan = build_plan(cfg)
    store = Store(tmp_path / "s.db")
    rid = execute(plan, t, lambda _p: FakeBackend(DISTS, fail={"b"}), store)
    assert store.sample_slots(rid) == 3 and store.sample_slots("no-such-run") == 0
    samples = store.samples(rid)
    want = {}
    for name in Counter(s.prior for s in samples):
        mine = [s for s in samples if s.prior == name]
        want[name] = (
            len(mine),
            sum(s.answer is None for s in mine),
            sum(s.correct is True for s in mine),
            sum(s.correct is not None for s in mine),
        )
    assert store.prior_counts(rid) == want and want["b"][1] == 12 and want["c"][2] == 0
    store.close()


def test_from_store_refuses_a_run_without_task_and_model(tmp_path):
    from marginal.types import Prior, Problem

    store = Store(tmp_path / "x.db")
    store.create_run("r", {"seed": 0}, [Problem("p", "q", "1")], [Prior("a")], "0")
    with pytest.raises(MarginalError, match="stores no task and model"):
        RunConfig.from_store(store, "r")
    store.close()
