"""Blend diagnostics of stored runs: accuracy against intervention rate.

A run whose model is a blend (``blend:BASE+GUIDE:...``, see `marginal.blend`)
stores per sample the guide's interventions, their rate per emitted token,
the mean guide weight and the mean top-k overlap (``Sample.diagnostics``,
named in `marginal.blend.completion.DIAGNOSTICS`). ``blend_rows`` reads every
blended run of a file as one row (a pair, variant and threshold);
``correlation`` measures, across rows, how accuracy moves with the
intervention rate (excessive interventions signal a poorly matched
pair). Pure numpy apart from the read, which goes through the store's query
methods and `marginal.blend.spec` (no engine is loaded).

Left out: per-token traces (only per-sample aggregates are stored), and
significance tests of the correlation (rows are few; the numbers are
descriptive, with n stated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..types import Sample


@dataclass(frozen=True)
class BlendRow:
    """One blended run of a file: its pair, settings and aggregate diagnostics."""

    run_id: str
    task: str
    model: str
    """The run's model spec, ``blend:BASE+GUIDE:variant=...,gamma=...``."""
    base: str
    guide: str
    variant: str
    gamma: float
    alpha: float | str
    samples: int
    graded: int
    """Samples of problems with a reference (failed ones count as wrong)."""
    correct: int
    failed: int
    intervention_rate: float
    """Mean over samples of interventions per emitted token."""
    mean_alpha: float
    """Mean over samples that intervened (nan if none did)."""
    topk_overlap: float
    retokenized: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.graded if self.graded else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.correct, self.graded)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        d = asdict(self)
        d["accuracy"], d["ci"] = self.accuracy, list(self.ci)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n ((nan, nan) for n = 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else math.nan


@dataclass(frozen=True)
class Correlation:
    """Correlation of accuracy with intervention rate across blended runs."""

    n: int
    pearson: float
    spearman: float

    def describe(self) -> str:
        if math.isnan(self.pearson):
            return "correlation undefined (accuracy or rate constant, or fewer than 3 settings)"
        return f"Pearson r = {self.pearson:+.2f}, Spearman ρ = {self.spearman:+.2f} (descriptive; n = {self.n})"


def correlation(rates: Sequence[float], accuracies: Sequence[float]) -> Correlation:
    """Pearson and Spearman correlation of ``accuracies`` with ``rates`` (nan when undefined)."""
    x, y = np.asarray(rates, float), np.asarray(accuracies, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return Correlation(len(x), math.nan, math.nan)
    return Correlation(len(x), _pearson(x, y), _pearson(_ranks(x), _ranks(y)))


def _nanmean(values: list) -> float:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else math.nan


def _row(run_id: str, cfg: dict, samples: Sequence[Sample], references: dict[str, str | None]) -> BlendRow | None:
    """The row of one blended run (None when no sample carries blend diagnostics)."""
    from ..blend.spec import blend_variant, parse_blend_spec

    model = cfg["model"]
    kept = [s for s in samples if s.problem_id in references and "interventions" in s.diagnostics]
    if not kept:
        return None
    # a failed sample of a problem with a reference counts as wrong
    graded = [int(bool(s.correct)) for s in kept if references[s.problem_id] is not None]
    d = [s.diagnostics for s in kept]
    base, guide, config, _ = parse_blend_spec(model)
    return BlendRow(
        run_id=run_id,
        task=cfg.get("task", ""),
        model=model,
        base=base,
        guide=guide,
        variant=blend_variant(model),
        gamma=config.gamma,
        alpha=config.alpha,
        samples=len(kept),
        graded=len(graded),
        correct=sum(graded),
        failed=sum(s.answer is None for s in kept),
        intervention_rate=_nanmean([x.get("intervention_rate") for x in d]),
        mean_alpha=_nanmean([x.get("mean_alpha") for x in d]),
        topk_overlap=_nanmean([x.get("topk_overlap") for x in d]),
        retokenized=int(sum(x.get("retokenized") or 0 for x in d)),
    )


def blend_rows(path) -> list[BlendRow]:
    """Every blended run stored in the file at ``path``, in the order they were created."""
    from ..store import Store

    store = Store(path, readonly=True)
    try:
        if "interventions" not in store.diagnostic_names():
            return []
        out = []
        for run_id, cfg in store.runs():
            if not cfg.get("model", "").startswith("blend:"):
                continue
            refs = {p.id: p.answer for p in store.problems(run_id)}
            row = _row(run_id, cfg, store.samples(run_id, decode=False), refs)
            if row is not None:
                out.append(row)
        return out
    finally:
        store.close()
