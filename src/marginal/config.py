"""A run's settings as one frozen value, and the plan they describe.

`RunConfig` holds everything a `marginal run` asks for: the task (and how to
read a ``jsonl:PATH`` file), the model, which priors, M samples per prior or a
budget B, the sampling settings, which problems, a policy, batching, threads
and Ray. It is built once, from command-line options or a request, or from
a stored run with `RunConfig.from_store` (``--resume``), and checked as it is
built: a bad value is a `MarginalError` naming the option.

`build_plan(config)` resolves it against the task: it loads the task and its
bank, picks the priors, sizes M, selects the problems and returns
``(task, RunPlan)``; `make_run_policy` gives the policy of a policy run.
Left out: executing a run (`marginal.runner`, `marginal.distributed`), where
its database goes, and loading engines (the caller keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MarginalError
from .types import Problem, SampleSpec

if TYPE_CHECKING:
    from .policies import Policy
    from .runner import RunPlan
    from .store import Store
    from .tasks.base import Task


def check_positive(name: str, value: int | None) -> None:
    """A MarginalError unless ``value`` is None or a positive integer (``name`` is the option)."""
    if value is not None and value <= 0:
        raise MarginalError(f"{name} must be a positive integer, got {value}")


def sample_spec(base: SampleSpec | None = None, **settings: Any) -> SampleSpec:
    """A `SampleSpec` (``base`` with ``settings`` replaced) whose invalid settings are a MarginalError."""
    try:
        return replace(base, **settings) if base is not None else SampleSpec(**settings)
    except ValueError as e:
        raise MarginalError(str(e)) from None


@dataclass(frozen=True)
class TaskSource:
    """Which task, and for ``jsonl:PATH`` how to read its rows (see `marginal.tasks.load_task`)."""

    name: str
    data: Path | None = None
    """Dataset file or folder (else ``$MARGINAL_DATA``, then the HF hub)."""
    question_field: str = "question"
    answer_field: str = "answer"
    grader: str | None = None

    def args(self, seed: int) -> dict[str, Any]:
        """``load_task``'s arguments with the task's ``name`` (the form Ray workers rebuild it from)."""
        return dict(
            name=self.name,
            data=self.data,
            question_field=self.question_field,
            answer_field=self.answer_field,
            grader=self.grader,
            seed=seed,
        )

    def load(self, seed: int) -> Task:
        from .tasks import load_task

        args = self.args(seed)
        return load_task(args.pop("name"), **args)


@dataclass(frozen=True)
class ProblemSelection:
    """Which of the task's problems a run holds."""

    limit: int | None = None
    """The first ``limit`` problems (all when None)."""
    subset_seed: int | None = None
    """With ``limit``: a random subset of ``limit`` problems drawn with this seed, kept in the task's order."""
    ids: tuple[str, ...] | None = None
    """Exactly these problems, in this order (a resumed run's own); ``limit`` and ``subset_seed`` are then unused."""

    def __post_init__(self) -> None:
        check_positive("--limit", self.limit)
        if self.ids is None and self.subset_seed is not None and not self.limit:
            raise MarginalError("--subset-seed picks --limit N problems at random; give --limit")

    def select(self, task: Task) -> list[Problem]:
        problems = task.problems()
        if not problems:
            raise MarginalError(f"task {task.name!r} has no problems")
        if self.ids is not None:
            by_id = {p.id: p for p in problems}
            missing = [i for i in self.ids if i not in by_id]
            if missing:
                raise MarginalError(
                    f"the stored run has problems the task {task.name!r} lacks: {', '.join(missing[:5])}"
                )
            return [by_id[i] for i in self.ids]
        if self.subset_seed is not None:
            import numpy as np

            keep = np.sort(np.random.default_rng(self.subset_seed).permutation(len(problems))[: self.limit])
            return [problems[i] for i in keep]
        return problems[: self.limit] if self.limit else problems


@dataclass(frozen=True)
class PolicySettings:
    """A policy run: each problem gets at most ``budget`` samples, chosen step by step by the policy ``name``."""

    name: str
    budget: int
    threshold: float = 0.95
    """adaptive: stop when P(leader stays leader) reaches this."""
    plan_file: Path | None = None
    """plan.json from `marginal analyze --save-plan` (policy planned); not part of the run's identity."""

    def __post_init__(self) -> None:
        check_positive("--budget", self.budget)

    def identity(self) -> dict[str, Any]:
        """What the run stores about its policy (`RunPlan.policy`)."""
        return {"name": self.name, "budget": self.budget, "threshold": self.threshold}


@dataclass(frozen=True)
class RaySettings:
    """Shard a grid run's batches to Ray actors."""

    address: str | None = None
    """HOST:PORT, ray://HOST:PORT or auto; None starts a local cluster."""
    workers: int | None = None
    """Worker actors (default: as many as the cluster's CPUs fit)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run asks for (see the module docstring); checked when built."""

    task: TaskSource
    model: str = "smollm2-135m"
    """Catalog name, .gguf path, hf:repo/file.gguf, http://... or an engine prefix (see `marginal models`)."""
    priors: str | None = None
    """K (the first K of the bank), names 'a,b,c' or 'all'; None: 4, or the whole bank for a policy run."""
    priors_file: Path | None = None
    """A YAML bank instead of the task's."""
    samples: int | None = None
    """M samples per prior of a grid run; None: budget / K, else 4 (a policy run samples one at a time)."""
    budget: int | None = None
    """Grid run: B = K x M samples per problem, which sets M (a policy run's budget is ``policy.budget``)."""
    sampling: SampleSpec = field(default_factory=SampleSpec)
    """Temperature, top_p, top_k, min_p, max_tokens, stop and seed; its ``n`` stays 1 (M is ``samples``)."""
    problems: ProblemSelection = field(default_factory=ProblemSelection)
    policy: PolicySettings | None = None
    """None: a K x M grid."""
    batch_samples: int = 64
    """Samples generated and committed per batch (a crash loses at most one batch)."""
    threads: int | None = None
    """CPU threads per llama.cpp engine (default: all cores; 1 per Ray worker)."""
    slots: int = 32
    """llama.cpp: sequences decoded together (continuous batching), one KV stream each."""
    ray: RaySettings | None = None
    """None: one process."""

    def __post_init__(self) -> None:
        check_positive("--budget", self.budget)
        check_positive("--samples", self.samples)
        check_positive("--batch-samples", self.batch_samples)
        check_positive("--slots", self.slots)
        if self.sampling.n != 1:
            raise MarginalError(
                f"RunConfig.sampling.n must be 1 (M samples per prior is RunConfig.samples), got {self.sampling.n}"
            )
        if self.policy is not None and self.budget is not None:
            raise MarginalError("a policy run's budget is its policy's (--budget), not a K x M grid's")
        if self.policy is not None and self.ray is not None:
            raise MarginalError("--ray runs K x M grids; --policy runs in one process (drop one of them)")

    @property
    def backend_options(self) -> dict[str, Any]:
        """``load_backend``'s options for this run's engines (llama.cpp's slots sized to max_tokens)."""
        from .backends import slot_options

        return slot_options(self.slots, self.sampling.max_tokens, threads=self.threads)

    @classmethod
    def from_store(cls, store: Store, run_id: str) -> RunConfig:
        """The settings of the run ``run_id`` in ``store``: its task (by name), model, sampling,
        priors (by name), problems (by id), samples per prior (its largest sample index + 1)
        and policy. Data files, the priors file, batching, threads and Ray are not stored:
        take them from the command line with `resume_with`."""
        stored = store.run_config(run_id)
        if not isinstance(stored.get("task"), str) or not isinstance(stored.get("model"), str):
            raise MarginalError(
                f"{store.path}: run {run_id} stores no task and model (it was not written by marginal run)"
            )
        spec = stored.get("spec", {})
        names = {f.name for f in fields(SampleSpec)} - {"n", "first_index"}
        pol = stored.get("policy")
        return cls(
            task=TaskSource(stored["task"]),
            model=stored["model"],
            priors=",".join(c.name for c in store.priors(run_id)),
            samples=max(1, store.sample_slots(run_id)),
            sampling=sample_spec(**{k: v for k, v in spec.items() if k in names}),
            problems=ProblemSelection(ids=tuple(p.id for p in store.problems(run_id))),
            policy=None if not pol else PolicySettings(pol["name"], pol["budget"], pol.get("threshold", 0.95)),
        )

    def resume_with(self, given: RunConfig) -> RunConfig:
        """This stored run (`from_store`) continued with what a resume may change, from ``given``:
        data files and fields, a priors file (then ``given``'s priors), more samples (``samples``
        or a grid ``budget``), the plan file, batching, threads and Ray. A stored policy run keeps
        its policy; a stored grid takes ``given``'s policy (which `marginal.runner.open_run`
        then refuses as another run)."""
        grown = given.samples is not None or given.budget is not None
        policy = self.policy
        if policy is not None:
            policy = replace(policy, plan_file=given.policy.plan_file if given.policy else None)
        return replace(
            given,
            task=replace(given.task, name=self.task.name),
            model=self.model,
            priors=given.priors if given.priors_file is not None else self.priors,
            samples=given.samples if grown else self.samples,
            budget=given.budget if grown and policy is None else None,
            sampling=self.sampling,
            problems=self.problems,
            policy=policy or given.policy,
        )


def _samples_per_prior(config: RunConfig, k: int) -> int:
    if config.policy is not None:
        return 1
    samples, budget = config.samples, config.budget
    if budget is not None:
        if budget % k:
            raise MarginalError(f"--budget {budget} is not a multiple of the {k} priors; expected K x M")
        if samples is not None and samples * k != budget:
            raise MarginalError(f"--budget {budget} != {k} priors x --samples {samples}")
        return budget // k
    return samples or 4


def build_plan(config: RunConfig) -> tuple[Task, RunPlan]:
    """The task and the run plan ``config`` describes (the task and bank loaded, priors and problems chosen)."""
    from .priors import load_bank, select_priors
    from .runner import RunPlan

    task = config.task.load(config.sampling.seed)
    bank = load_bank(config.priors_file) if config.priors_file else task.bank()
    priors = config.priors or ("all" if config.policy else "4")
    chosen = list(bank) if priors == "all" else select_priors(bank, priors)
    spec = sample_spec(config.sampling, n=_samples_per_prior(config, len(chosen)))
    problems = config.problems.select(task)
    policy = config.policy.identity() if config.policy else None
    return task, RunPlan(task.name, config.model, spec, tuple(chosen), tuple(problems), policy)


def make_run_policy(config: RunConfig, plan: RunPlan) -> Policy | None:
    """The policy of a policy run, sized for ``plan``'s bank (None for a grid); a plan file is checked
    against the run's task and model."""
    from .policies import SplitPlan, make_policy

    pol = config.policy
    if pol is None:
        return None
    split_plan = SplitPlan.load(pol.plan_file) if pol.plan_file else None
    if split_plan is not None:
        split_plan.check(plan.task, config.model)
    k = len(plan.priors)
    names = [c.name for c in plan.priors]
    return make_policy(pol.name, pol.budget, k, k=k, plan=split_plan, threshold=pol.threshold, names=names)


__all__ = [
    "PolicySettings",
    "ProblemSelection",
    "RaySettings",
    "RunConfig",
    "TaskSource",
    "build_plan",
    "check_positive",
    "make_run_policy",
    "sample_spec",
]
