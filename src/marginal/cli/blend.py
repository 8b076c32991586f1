"""`marginal blend`: blend a base and a guide model on a task, per variant.

Each variant is one run of the main store (``--out``, several runs side by
side): its model is the canonical spec ``blend:BASE+GUIDE:variant=V,gamma=G,
alpha=A,top_k=K,match=M`` (the same string works as ``--model`` of `marginal
run`), one prior (the task's first or ``--prior NAME``, each model with its
own chat template) and M samples per problem (1 in greedy mode). Samples carry
the intervention diagnostics as columns (interventions, intervention_rate,
mean_alpha, topk_overlap, retokenized); a rerun generates only what is
missing. `marginal analyze FILE` tabulates them with the correlation of
accuracy and intervention rate, `marginal report` plots it.
Left out: several priors per variant (use a blend model in `marginal run`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.markup import escape

from ..config import ProblemSelection, RunConfig, TaskSource, build_plan, sample_spec
from ..errors import MarginalError, unknown
from .common import out, task_help
from .progress import ProgressBar
from .render import render_blend


def parse_alpha(value: str):
    """'auto' or a float in [0, 1] (CLI form of BlendConfig.alpha)."""
    if value == "auto":
        return "auto"
    try:
        a = float(value)
    except ValueError:
        raise MarginalError(f"--alpha must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0 <= a <= 1:
        raise MarginalError(f"--alpha must be 'auto' or a number in [0, 1], got {value!r}")
    return a


def blend(
    task_name: str = typer.Argument(..., metavar="TASK", help=task_help()),
    base: str = typer.Option(..., "--base", help="base model: catalog name, .gguf path or hf:repo/file.gguf"),
    guide: str = typer.Option(..., "--guide", help="guide model consulted at interventions"),
    gamma: list[float] = typer.Option(
        [0.4], help="intervene when the base's top probability is below gamma (repeatable: a sweep)"
    ),
    alpha: str = typer.Option("auto", help="guide weight: auto or a number in [0, 1]"),
    top_k: int = typer.Option(100, "--top-k", help="mix over the union of both top-k lists"),
    mode: str = typer.Option("greedy", help="greedy (argmax of the mixture) or sample"),
    samples: int = typer.Option(1, "--samples", "-M", help="sample mode: completions per problem"),
    temperature: float = typer.Option(0.7, help="sample mode: temperature"),
    variant: list[str] = typer.Option(
        ["blend"],
        "--variant",
        "-v",
        help="blend|base|guide|nudge|always|geometric|alpha0.25|alpha0.5|alpha0.75|all (repeatable)",
    ),
    match: str = typer.Option("auto", help="token matching: auto|id|string"),
    prior_name: str | None = typer.Option(None, "--prior", help="the task's prior to prompt with (default: its first)"),
    limit: int | None = typer.Option(None, "--limit", "-n", help="first N problems only"),
    subset_seed: int | None = typer.Option(
        None, help="with --limit N: a random subset of N problems drawn with this seed"
    ),
    max_tokens: int = typer.Option(256, help="most new tokens per completion"),
    seed: int = typer.Option(0, help="sampler seed (sample mode)"),
    out_path: Path = typer.Option(
        Path("runs/blend.db"), "--out", "-o", help="run database (one run per variant and setting)"
    ),
    data: Path | None = typer.Option(None, help="dataset file (else $MARGINAL_DATA, then the HF hub)"),
    n_ctx: int = typer.Option(4096, help="KV cells per model"),
    max_seqs: int = typer.Option(16, help="sequences decoded together"),
    threads: int | None = typer.Option(None, help="CPU threads for llama.cpp (default: all cores)"),
) -> None:
    """Blend a base and a guide model token by token (BlendIn); accuracy and interventions per variant."""
    from ..analysis.blend import blend_rows
    from ..blend import VARIANTS, BlendBackend, format_blend_spec, variant_config
    from ..runner import execute
    from ..store import Store

    if mode not in ("greedy", "sample"):
        raise MarginalError(f"--mode must be 'greedy' or 'sample', got {mode!r}")
    if match not in ("auto", "id", "string"):
        raise unknown("--match", match, ("auto", "id", "string"))
    if mode == "greedy" and samples != 1:
        raise MarginalError(f"--samples {samples}: greedy decoding gives one completion per problem; use --mode sample")
    a = parse_alpha(alpha)
    names = list(VARIANTS) if "all" in variant else list(dict.fromkeys(variant))
    configs = [(v, variant_config(v, gamma=g, alpha=a, top_k=top_k)) for v in names for g in gamma]
    task, plan = build_plan(
        RunConfig(
            TaskSource(task_name, data),
            model="blend",
            priors=prior_name or "1",
            samples=samples,
            sampling=sample_spec(
                temperature=0.0 if mode == "greedy" else temperature, max_tokens=max_tokens, seed=seed
            ),
            problems=ProblemSelection(limit, subset_seed),
        )
    )
    store = Store(out_path)
    with BlendBackend.load(base, guide, match=match, n_ctx=n_ctx, max_seqs=max_seqs, n_threads=threads) as pair:
        out.print(
            f"[bold]{escape(task.name)}[/]: {len(plan.problems)} problems, base {escape(base)}, guide {escape(guide)}, "
            f"match by {pair.match}, {mode}, prior {escape(plan.priors[0].name)}"
        )
        runs = {
            format_blend_spec(base, guide, v, cfg, pair.match): (v, cfg) for v, cfg in configs
        }  # a sweep's duplicates collapse
        for spec, (v, cfg) in runs.items():
            b = pair.with_config(cfg, name=spec)

            def backend_for(_prior, b=b):
                return b

            vplan = replace(plan, model=spec)
            t0 = time.perf_counter()
            with ProgressBar(vplan) as bar:
                run_id = execute(vplan, task, backend_for, store, batch_samples=max_seqs, on_progress=bar, beside=True)
            out.print(f"  {escape(v)} (γ={cfg.gamma:g}, α={cfg.alpha}): run {run_id}, {time.perf_counter() - t0:.1f} s")
    store.close()
    render_blend(blend_rows(out_path), out, title=f"blend on {task.name} ({len(plan.problems)} problems) -> {out_path}")


__all__ = ["blend", "parse_alpha"]
