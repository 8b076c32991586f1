"""`ProgressBar`: the rich progress bar of `marginal run` and `marginal blend`.

It shows the run (task · model), problems done, samples done of the total,
samples/s and tokens/s since it started, the elapsed time and the ETA. It is
a context manager (shown while inside) and a callback for the runner's
`marginal.runner.Progress` reports. Left out: per-prior or per-worker bars.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..runner import Progress as RunProgress
from ..runner import RunPlan
from .common import out


class ProgressBar:
    """A progress bar for ``plan``: ``budget`` samples per problem (a policy run), else K x M."""

    def __init__(self, plan: RunPlan, budget: int | None = None, console: Console | None = None):
        self.t0 = time.perf_counter()
        self.samples = self.tokens = 0
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            TextColumn("{task.fields[problems]} problems"),
            TextColumn("{task.completed}/{task.total} samples"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or out,
        )
        per_problem = budget or len(plan.priors) * plan.spec.n
        self.task = self.progress.add_task(
            f"{plan.task} · {plan.model}",
            total=len(plan.problems) * per_problem,
            problems=f"0/{len(plan.problems)}",
            rate="",
        )

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, p: RunProgress) -> None:
        self.samples += p.new_samples
        self.tokens += p.new_tokens
        dt = max(1e-9, time.perf_counter() - self.t0)
        self.progress.update(
            self.task,
            completed=p.samples_done,
            problems=f"{p.problems_done}/{p.problems_total}",
            rate=f"{self.samples / dt:.1f} samples/s · {self.tokens / dt:.0f} tok/s",
        )


__all__ = ["ProgressBar"]
