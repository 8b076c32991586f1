"""`marginal run`: sample K priors x M samples (or a policy's choice) per problem into a resumable pool.

The command turns its options into one `marginal.config.RunConfig` (or, with
``--resume``, the stored run's own config with the few options a resume may
change), then `execute_run` builds the plan, connects Ray if asked, opens the
store, generates what is missing with a progress bar and prints a per-prior
summary. Left out: an engine cache shared with other commands (each run loads
its engines and closes them at the end).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..config import (
    PolicySettings,
    ProblemSelection,
    RaySettings,
    RunConfig,
    TaskSource,
    build_plan,
    make_run_policy,
    sample_spec,
)
from ..errors import MarginalError
from .common import default_run_path, names, out, plain, task_help
from .progress import ProgressBar

_PRIORS, _SAMPLING, _DATA, _POLICY, _EXEC = "Priors and samples", "Sampling", "Problems and data", "Policy", "Execution"


def run(
    task: str = typer.Argument(..., help=task_help()),
    model: str = typer.Option(
        "smollm2-135m", "--model", "-m", help="catalog name (see `marginal models`), .gguf path or hf:repo/file.gguf"
    ),
    priors: str | None = typer.Option(
        None,
        "--priors",
        "-k",
        help="K: the first K priors of the bank, or names 'a,b,c' (default 4; with --policy the whole bank)",
        rich_help_panel=_PRIORS,
    ),
    priors_file: Path | None = typer.Option(
        None, "--priors-file", help="YAML bank of priors instead of the task's", rich_help_panel=_PRIORS
    ),
    samples: int | None = typer.Option(
        None, "--samples", "-M", help="M: samples per prior (default 4)", rich_help_panel=_PRIORS
    ),
    budget: int | None = typer.Option(
        None, "--budget", "-B", help="B = K x M samples per problem (sets M)", rich_help_panel=_PRIORS
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", help="first N problems only", rich_help_panel=_DATA),
    subset_seed: int | None = typer.Option(
        None,
        help="with --limit N: a random subset of N problems drawn with this seed, not the first N",
        rich_help_panel=_DATA,
    ),
    seed: int = typer.Option(0, help="base seed; the same seed reproduces the same samples", rich_help_panel=_SAMPLING),
    max_tokens: int = typer.Option(256, help="most new tokens per sample", rich_help_panel=_SAMPLING),
    temperature: float = typer.Option(0.7, help="sampling temperature", rich_help_panel=_SAMPLING),
    top_p: float = typer.Option(1.0, help="nucleus mass", rich_help_panel=_SAMPLING),
    top_k: int = typer.Option(0, help="top-k (0 = off)", rich_help_panel=_SAMPLING),
    min_p: float = typer.Option(0.0, help="min-p (0 = off)", rich_help_panel=_SAMPLING),
    out_path: Path | None = typer.Option(None, "--out", "-o", help="run database (default runs/TASK-MODEL.db)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run stored in --out with its own settings"),
    data: Path | None = typer.Option(
        None, help="dataset file (else $MARGINAL_DATA, then the HF hub)", rich_help_panel=_DATA
    ),
    question_field: str = typer.Option("question", help="jsonl: field holding the question", rich_help_panel=_DATA),
    answer_field: str = typer.Option("answer", help="jsonl: field holding the reference answer", rich_help_panel=_DATA),
    grader: str | None = typer.Option(None, help=f"jsonl: {'|'.join(names('grader'))}", rich_help_panel=_DATA),
    policy: str | None = typer.Option(
        None,
        help=f"allocate with a policy instead of a K x M grid: {'|'.join(names('policy'))} (needs --budget)",
        rich_help_panel=_POLICY,
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="plan.json from `marginal analyze --save-plan` (policy planned)", rich_help_panel=_POLICY
    ),
    threshold: float = typer.Option(
        0.95, help="adaptive: stop when P(leader stays leader) reaches this", rich_help_panel=_POLICY
    ),
    threads: int | None = typer.Option(
        None, help="CPU threads for llama.cpp (default: all cores)", rich_help_panel=_EXEC
    ),
    batch_samples: int = typer.Option(
        64,
        help="samples committed per transaction (a crash loses at most these and the samples in flight)",
        rich_help_panel=_EXEC,
    ),
    slots: int = typer.Option(
        32, help="llama.cpp: sequences decoded together; a finished one's slot is taken at once", rich_help_panel=_EXEC
    ),
    use_ray: bool = typer.Option(
        False,
        "--ray",
        help="shard the batches to Ray workers, each with its own model (pip install 'marginal\\[ray]')",
        rich_help_panel=_EXEC,
    ),
    address: str | None = typer.Option(
        None,
        help="--ray: cluster address HOST:PORT, ray://HOST:PORT or auto (default: a new local cluster)",
        rich_help_panel=_EXEC,
    ),
    workers: int | None = typer.Option(
        None, help="--ray: worker actors, each with --threads CPUs (default: the cluster's CPUs)", rich_help_panel=_EXEC
    ),
) -> None:
    """Sample K priors x M samples for each problem into a resumable SQLite pool.

    With --policy, each problem gets at most --budget samples chosen step by step
    by the policy; every decision is stored with its reason."""
    if resume and out_path is None:
        raise MarginalError("--resume needs --out RUN.db")
    if not use_ray and (address is not None or workers is not None):
        raise MarginalError("--address and --workers apply to --ray runs only")
    if policy is not None and budget is None:
        raise MarginalError("--policy needs --budget B (samples per problem)")
    config = RunConfig(
        task=TaskSource(task, data, question_field, answer_field, grader),
        model=model,
        priors=priors,
        priors_file=priors_file,
        samples=samples,
        budget=None if policy else budget,
        sampling=sample_spec(
            temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, max_tokens=max_tokens, seed=seed
        ),
        problems=ProblemSelection(limit, subset_seed),
        policy=PolicySettings(policy, budget, threshold, plan_file)
        if policy is not None and budget is not None
        else None,
        batch_samples=batch_samples,
        threads=threads,
        slots=slots,
        ray=RaySettings(address, workers) if use_ray else None,
    )
    if resume and out_path is not None:
        config = resumed(config, out_path)
    execute_run(config, out_path or default_run_path(config.task.name, config.model))


def resumed(given: RunConfig, path: Path) -> RunConfig:
    """The run stored in ``path`` with its own settings, continued with what ``given`` may change."""
    from ..store import Store

    if not path.exists():
        raise MarginalError(f"--resume: no such run database: {path}")
    store = Store(path, readonly=True)
    try:
        return RunConfig.from_store(store, store.only_run()).resume_with(given)
    finally:
        store.close()


def execute_run(config: RunConfig, out_path: Path) -> str:
    """Generate every sample the run ``config`` lacks into ``out_path`` with a progress bar, then print
    a per-prior summary; returns the run id. Nothing is written before the plan, the policy and the
    Ray connection are known to be good, and a database holding another run is refused."""
    from ..backends.cache import Engines
    from ..runner import open_run
    from ..store import Store

    task, plan = build_plan(config)
    policy = make_run_policy(config, plan)
    cluster = None
    if config.ray is not None:  # connect before the store is touched: a bad address leaves it as it was
        from ..distributed import RayCluster

        cluster = RayCluster(config.ray.address, config.ray.workers, config.threads or 1)
    engines = Engines(**config.backend_options)
    backend_for = engines.backend_for(config.model)
    store = None
    try:
        store = Store(out_path)
        open_run(store, plan)  # refuse a mismatched database before loading any model
        t0 = time.perf_counter()
        with ProgressBar(plan, config.policy.budget if config.policy else None) as bar:
            run_id = _generate(config, task, plan, policy, backend_for, store, bar)
        _summary(store, run_id, plan, time.perf_counter() - t0, out_path)
        return run_id
    finally:
        engines.close()
        if cluster is not None:
            cluster.close()
        if store is not None:
            store.close()


def _generate(config: RunConfig, task, plan, policy, backend_for, store, bar: ProgressBar) -> str:
    """Run the grid (in this process or on Ray) or the policy; returns the run id."""
    from ..allocate import execute_policy
    from ..runner import execute

    if config.ray is not None:
        from ..distributed import execute_ray

        threads = config.threads or 1
        report = execute_ray(
            plan,
            config.task.args(config.sampling.seed),
            config.model,
            store,
            workers=config.ray.workers,
            address=config.ray.address,
            backend_options={"n_threads": threads},
            batch_samples=config.batch_samples,
            on_progress=bar,
            cpus_per_worker=threads,
        )
        if report.retried or report.duplicates:
            out.print(
                f"[yellow]Ray: {report.retried} batches retried after workers died, "
                f"{report.duplicates} duplicate samples skipped[/]"
            )
        return report.run_id
    if policy is None or config.policy is None:
        return execute(plan, task, backend_for, store, batch_samples=config.batch_samples, on_progress=bar)
    return execute_policy(
        plan,
        policy,
        config.policy.budget,
        task,
        backend_for,
        store,
        on_progress=bar,
        batch_samples=config.batch_samples,
    )


def _summary(store, run_id: str, plan, seconds: float, path: Path) -> None:
    from rich.table import Table

    counts = store.prior_counts(run_id)
    t = Table(title=plain(f"{plan.task} · {plan.model} · {len(plan.problems)} problems · run {run_id}"))
    for col in ("prior", "samples", "failed", "accuracy"):
        t.add_column(col, justify="left" if col == "prior" else "right")
    for c in plan.priors:
        n, failed, right, graded = counts.get(c.name, (0, 0, 0, 0))
        acc = f"{right / n:.1%}" if graded else "—"
        t.add_row(plain(c.name), str(n), str(failed), acc)
    out.print(t)
    out.print(
        plain(
            f"stored in {path} ({store.count(run_id)} samples, {seconds:.1f} s this time); "
            f"next: marginal analyze {path}"
        )
    )


__all__ = ["execute_run", "resumed", "run"]
