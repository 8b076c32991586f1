"""`marginal blend`: blend a base and a guide model on a task, per variant
(registered on cli.app).

Each variant generates one completion per problem (the task's first prior or
``--prior NAME``, each model with its own chat template); answers are extracted and graded by
the task. Rows go to a ``blend_samples`` table of the SQLite file ``--out``
(one row per variant, settings and problem; a rerun skips rows already
there), and a table of accuracy and intervention rate per variant is printed.
Left out: several priors or samples per problem (use a BlendBackend as a
prior's model in `marginal run` for that) and `marginal analyze` integration.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli import app
from .errors import MarginalError, unknown

out = Console()

SCHEMA = """
CREATE TABLE IF NOT EXISTS blend_samples (
    base TEXT NOT NULL, guide TEXT NOT NULL, variant TEXT NOT NULL, config TEXT NOT NULL,
    task TEXT NOT NULL, problem_id TEXT NOT NULL, seed INTEGER NOT NULL, temperature REAL NOT NULL,
    max_tokens INTEGER NOT NULL,
    text TEXT, answer TEXT, correct INTEGER, error TEXT, finish_reason TEXT,
    steps INTEGER, interventions INTEGER, intervention_rate REAL, mean_alpha REAL, topk_overlap REAL,
    retokenized INTEGER, completion_tokens INTEGER, seconds REAL,
    PRIMARY KEY (base, guide, config, task, problem_id, seed, temperature, max_tokens)
)
"""


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


def _nan(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


@app.command("blend")
def blend_cmd(
    task_name: str = typer.Argument(..., metavar="TASK", help="gsm8k, math500, gpqa-diamond, humaneval or jsonl:PATH"),
    base: str = typer.Option(..., "--base", help="base model: catalog name, .gguf path or hf:repo/file.gguf"),
    guide: str = typer.Option(..., "--guide", help="guide model consulted at interventions"),
    gamma: float = typer.Option(0.4, help="intervene when the base's top probability is below gamma"),
    alpha: str = typer.Option("auto", help="guide weight: auto or a number in [0, 1]"),
    top_k: int = typer.Option(100, "--top-k", help="mix over the union of both top-k lists"),
    mode: str = typer.Option("greedy", help="greedy (argmax of the mixture) or sample"),
    temperature: float = typer.Option(0.7, help="sample mode: temperature"),
    variant: list[str] = typer.Option(["blend"], "--variant", "-v", help="blend|base|guide|nudge|always|geometric|alpha0.25|alpha0.5|alpha0.75|all (repeatable)"),
    match: str = typer.Option("auto", help="token matching: auto|id|string"),
    prior_name: Optional[str] = typer.Option(None, "--prior", help="the task's prior to prompt with (default: its first)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N problems only"),
    max_tokens: int = typer.Option(256, help="most new tokens per completion"),
    seed: int = typer.Option(0, help="sampler seed (sample mode)"),
    out_path: Path = typer.Option(Path("runs/blend.db"), "--out", "-o", help="SQLite file for the blend rows"),
    data: Optional[Path] = typer.Option(None, help="dataset file (else $MARGINAL_DATA, then the HF hub)"),
    n_ctx: int = typer.Option(4096, help="KV cells per model"),
    max_seqs: int = typer.Option(16, help="sequences decoded together"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for llama.cpp (default: all cores)"),
) -> None:
    """Blend a base and a guide model token by token (BlendIn); accuracy and interventions per variant."""
    from .blend import VARIANTS, BlendBackend, variant_config
    from .tasks import extract_all, load_task
    from .types import SampleSpec

    if mode not in ("greedy", "sample"):
        raise MarginalError(f"--mode must be 'greedy' or 'sample', got {mode!r}")
    if limit is not None and limit <= 0:
        raise MarginalError(f"--limit must be a positive integer, got {limit}")
    a = parse_alpha(alpha)
    names = list(VARIANTS) if "all" in variant else list(dict.fromkeys(variant))
    configs = {v: variant_config(v, gamma=gamma, alpha=a, top_k=top_k) for v in names}
    try:
        spec = SampleSpec(n=1, temperature=0.0 if mode == "greedy" else temperature, max_tokens=max_tokens, seed=seed)
    except ValueError as e:
        raise MarginalError(str(e)) from None
    task = load_task(task_name, data=data)
    problems = task.problems()[: limit or None]
    if not problems:
        raise MarginalError(f"task {task_name!r} has no problems")
    bank = task.bank()
    if prior_name is None:
        prior = bank[0]
    else:
        by_name = {p.name: p for p in bank}
        if prior_name not in by_name:
            raise unknown("prior", prior_name, by_name)
        prior = by_name[prior_name]
    prompts = [prior.render(p.question) for p in problems]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(out_path)
    db.execute(SCHEMA)
    summary = []
    with BlendBackend.load(base, guide, match=match, n_ctx=n_ctx, max_seqs=max_seqs, n_threads=threads) as pair:  # type: ignore[arg-type]
        out.print(f"[bold]{task.name}[/]: {len(problems)} problems, base {base}, guide {guide}, "
                  f"match by {pair.match}, {mode}")
        for v in names:
            cfg = configs[v]
            cfg_json = json.dumps({"gamma": cfg.gamma, "alpha": cfg.alpha, "top_k": cfg.top_k,
                                   "combine": cfg.combine, "solo": cfg.solo, "prior": prior.name}, sort_keys=True)
            key = (base, guide, cfg_json, task.name, seed, spec.temperature, max_tokens)
            done = {r[0] for r in db.execute(
                "SELECT problem_id FROM blend_samples WHERE base=? AND guide=? AND config=? AND task=? AND seed=? "
                "AND temperature=? AND max_tokens=?", key)}
            todo = [i for i, p in enumerate(problems) if p.id not in done]
            if todo:
                b = pair.with_config(cfg)
                t0 = time.perf_counter()
                comps = [c[0] for c in b.generate([prompts[i] for i in todo], spec)]
                secs = (time.perf_counter() - t0) / len(todo)
                ex = extract_all(task, [(c.text, problems[i]) for c, i in zip(comps, todo)])
                rows = []
                for c, i, e in zip(comps, todo, ex):
                    p = problems[i]
                    correct = task.grade(e.answer, p) if e.answer is not None else (False if p.answer is not None else None)
                    text = None if p.meta.get("redact") else c.text
                    rows.append((base, guide, v, cfg_json, task.name, p.id, seed, spec.temperature, max_tokens, text, e.answer,
                                 None if correct is None else int(correct), c.error or e.error, c.finish_reason,
                                 c.steps, c.interventions, c.intervention_rate, _nan(c.mean_alpha), _nan(c.overlap),
                                 c.retokenized, c.completion_tokens, secs))
                with db:
                    db.executemany(f"INSERT OR REPLACE INTO blend_samples VALUES ({','.join('?' * 22)})", rows)
            ids = [p.id for p in problems]
            q = ("SELECT correct, steps, interventions, mean_alpha, topk_overlap, completion_tokens, seconds "
                 "FROM blend_samples WHERE base=? AND guide=? AND config=? AND task=? AND seed=? AND temperature=? "
                 f"AND max_tokens=? AND problem_id IN ({','.join('?' * len(ids))})")
            got = db.execute(q, (*key, *ids)).fetchall()
            summary.append((v, got))
    db.close()

    table = Table(title=f"blend on {task.name} ({len(problems)} problems) -> {out_path}")
    for col in ("variant", "n", "accuracy", "intervention rate", "mean alpha", "top-k overlap", "tokens/s"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v, got in summary:
        n = len(got)
        graded = [r[0] for r in got if r[0] is not None]
        acc = f"{sum(graded) / len(graded):.3f}" if graded else "-"
        steps = sum(r[1] or 0 for r in got)
        inter = sum(r[2] or 0 for r in got)
        alphas = [r[3] for r in got if r[3] is not None]
        ovs = [r[4] for r in got if r[4] is not None]
        secs = sum(r[6] or 0 for r in got)
        toks = sum(r[5] or 0 for r in got)
        table.add_row(v, str(n), acc, f"{inter / steps:.3f}" if steps else "-",
                      f"{sum(alphas) / len(alphas):.3f}" if alphas else "-",
                      f"{sum(ovs) / len(ovs):.3f}" if ovs else "-", f"{toks / secs:.1f}" if secs else "-")
    out.print(table)
