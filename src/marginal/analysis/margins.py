"""Margins, alignment drift, regimes and the bias-variance view (docs/method.md).

Per problem, p_c(a) is prior c's empirical answer distribution in the pool
(its stored samples; a failed sample counts in the denominator and votes for
nothing, so p_c sums to the prior's answered share). Mixture over the first
K priors: p̄_K = mean of p_1..p_K.

- Γ_K = p̄_K(a*) − max_{b wrong} p̄_K(b) (0 for the max when no wrong answer), a*
  the correct answer with the most mass (a problem may have several correct
  answers, `Pool.also_correct`: the others are not competitors).
- Label-free margin: top-1 share − top-2 share of p̄_K.
- κ_K = (K+1)(Γ_{K+1} − Γ_K), K = 1..P−1; per problem λ = mean_K κ_K; the
  dataset λ is the mean over problems with a percentile bootstrap CI over
  problems.
- Regime: misaligned when the CI of λ is below 0; aligned when it is above 0
  and the mean Γ curve still gains in the second half of the bank (K95, the
  smallest K reaching 95% of the largest mean gain over Γ_1, is > P/2);
  otherwise saturating (K95 priors, the rest of the budget on M).
- Bias-variance: for X_b = 1[a=a*] − 1[a=b], per prior mean μ_c(b) and
  variance; σ²_w = mean within-prior variance (unbiased), σ²_btw = variance
  of the prior means minus their sampling noise (method of moments, clipped
  at 0). The normal approximation of the vote's accuracy models K priors
  drawn at random (without replacement, as the allocation draws them) and
  each prior's M answers as a normal vote-share vector with its multinomial
  mean and covariance (so the margin X̄_b has variance σ²_w/(KM) + the
  between-prior spread over K); the counts are rounded, so ties and empty
  votes score as in the vote. The probability is estimated with seeded draws
  (common to every cell). It is reported next to the exact accuracy of that
  same allocation model (samples drawn with replacement).

Left out: drift in orders other than the bank's; a closed form of the
normal approximation (the competitors are correlated through a*, so a
product of one-competitor normals is far off: docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MarginalError
from ..vote import credit_array
from .accuracy import accuracy_grid, grid_cells
from .pool import Pool

REGIMES = ("aligned", "misaligned", "saturating")
NORMAL_DRAWS = 2000
"""Draws of the normal approximation per problem: a dataset cell's Monte Carlo SE is at most 1.1/√N points."""


def shares(pool: Pool) -> np.ndarray:
    """(N, P, A) p_c(a) per problem; the gold id always has a column."""
    c, _, n = pool.counts()
    return c / np.maximum(n, 1)[..., None]


def _gamma(pbar: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Γ of mixtures pbar (N, ..., A) for the correct-answer masks ``good`` (N, A)."""
    g = good.reshape((good.shape[0],) + (1,) * (pbar.ndim - 2) + (good.shape[1],))
    pg = np.where(g, pbar, 0.0).max(axis=-1)
    mx = np.where(g, 0.0, pbar).max(axis=-1)
    return pg - np.maximum(mx, 0.0)


def _top2(pbar: np.ndarray) -> np.ndarray:
    s = np.sort(pbar, axis=-1)
    return s[..., -1] - (s[..., -2] if pbar.shape[-1] > 1 else 0.0)


def prefix_mixtures(pool: Pool) -> np.ndarray:
    """(N, P, A) p̄_K for K = 1..P (first K priors in bank order)."""
    p = shares(pool)
    return np.cumsum(p, axis=1) / np.arange(1, pool.n_priors + 1)[None, :, None]


@dataclass(frozen=True, eq=False)
class Margins:
    """Per-problem margins as priors are added in bank order."""

    gamma: np.ndarray
    """(N, P) Γ_K, column K-1 (labelled problems only)."""
    label_free: np.ndarray
    """(N, P) top-1 minus top-2 share of p̄_K."""
    dominance: np.ndarray
    """(P,) share of problems with Γ_K > 0 (correct-mode dominance)."""
    gold_sampled: np.ndarray
    """(N,) gold appears somewhere in the problem's pool."""
    outvoted: np.ndarray
    """(N,) gold sampled but Γ_P < 0 (a wrong answer has more mass over the whole bank)."""
    tied: np.ndarray
    """(N,) gold sampled and Γ_P == 0."""
    problems: tuple[str, ...] = ()


def label_free_margins(pool: Pool) -> np.ndarray:
    """(N, P) label-free margin of p̄_K for every problem (needs no gold)."""
    return _top2(prefix_mixtures(pool))


def margins(pool: Pool) -> Margins:
    """Γ_K, label-free margins, dominance and outvoted problems (labelled problems)."""
    pool.require_gold("the effective margin")
    sub = pool.subset(pool.labelled)
    pbar = prefix_mixtures(sub)
    gamma = _gamma(pbar, sub.correct_mask(pbar.shape[-1]))
    sampled = sub.gold_sampled()
    last = gamma[:, -1]
    return Margins(
        gamma=gamma,
        label_free=_top2(pbar),
        dominance=(gamma > 1e-12).mean(axis=0),
        gold_sampled=sampled,
        outvoted=sampled & (last < -1e-12),
        tied=sampled & (np.abs(last) <= 1e-12),
        problems=sub.problems,
    )


@dataclass(frozen=True, eq=False)
class Drift:
    """Alignment drift of the bank order and the regime it implies."""

    gamma_mean: np.ndarray
    """(P,) mean Γ_K over problems."""
    gamma_ci: np.ndarray
    """(2, P) bootstrap percentile band of the mean Γ_K."""
    kappa: np.ndarray
    """(N, P-1) κ_K per problem, K = 1..P-1."""
    kappa_mean: np.ndarray
    """(P-1,) mean κ_K."""
    lam_problem: np.ndarray
    """(N,) λ per problem (mean over K of κ_K)."""
    lam: float
    """Dataset drift coefficient λ (mean over problems)."""
    lam_ci: tuple[float, float]
    """Percentile bootstrap CI of λ over problems."""
    regime: str
    """aligned, misaligned or saturating."""
    k95: int
    """Smallest K whose mean Γ gain over Γ_1 reaches 95% of the largest gain (1 when there is no gain)."""
    level: float = 0.95
    n_boot: int = 2000

    def recommend(self, budget: int, n_slots: int) -> tuple[int, int]:
        """The regime's (K, M) for a budget: aligned K = min(B, P); misaligned K = 1; saturating K = K95."""
        P = len(self.gamma_mean)
        if self.regime == "aligned":
            k = min(budget, P)
        elif self.regime == "misaligned":
            k = 1
        else:
            k = min(self.k95, budget, P)
        return k, max(1, min(budget // k, n_slots))


def drift(pool: Pool, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Drift:
    """κ_K, λ with a bootstrap CI over problems, and the regime (see module docstring)."""
    if pool.n_priors < 2:
        raise MarginalError(f"alignment drift needs at least 2 priors, run {pool.run_id or '(arrays)'} has 1")
    m = margins(pool)
    gamma = m.gamma
    N, P = gamma.shape
    K = np.arange(1, P)
    kappa = (K + 1)[None, :] * (gamma[:, 1:] - gamma[:, :-1])
    lam_p = kappa.mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, N, size=(n_boot, N))
    boot_lam = lam_p[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(boot_lam, [a, 1 - a])
    gmean = gamma.mean(axis=0)
    gband = np.concatenate([gamma[idx[s : s + 256]].mean(axis=1) for s in range(0, n_boot, 256)])
    gci = np.quantile(gband, [a, 1 - a], axis=0)
    gain = gmean - gmean[0]
    top = gain.max()
    k95 = 1 if top <= 1e-12 else int(np.flatnonzero(gain >= 0.95 * top - 1e-12)[0]) + 1
    if hi < 0:
        regime = "misaligned"
    elif lo > 0 and k95 > P / 2:
        regime = "aligned"
    else:
        regime = "saturating"
    return Drift(
        gmean,
        gci,
        kappa,
        kappa.mean(axis=0),
        lam_p,
        float(lam_p.mean()),
        (float(lo), float(hi)),
        regime,
        k95,
        level,
        n_boot,
    )


# -- bias-variance -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BiasVariance:
    """Between- and within-prior variance of the gold-vs-competitor vote, and the normal approximation."""

    gamma: np.ndarray
    """(N,) bank-mean margin Γ_b against the strongest competitor b (−1 ... 1)."""
    sigma2_w: np.ndarray
    """(N,) within-prior variance of X_b for that competitor."""
    sigma2_btw: np.ndarray
    """(N,) between-prior variance of its prior means (method of moments, >= 0)."""
    cells: tuple[tuple[int, int], ...]
    normal: np.ndarray
    """(N, C) normal-approximation accuracy per cell."""
    exact: np.ndarray
    """(N, C) exact accuracy of the same allocation model (random K priors, draws with replacement)."""

    @property
    def mean_abs_error(self) -> float:
        """Mean over cells of |dataset normal − dataset exact| (calibration of the theory)."""
        return float(np.abs(self.normal.mean(axis=0) - self.exact.mean(axis=0)).mean())


def moments(pool: Pool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per labelled problem and competitor b: Γ_b, σ²_w, σ²_btw (N, A) and a mask of competitors present."""
    pool.require_gold("the bias-variance decomposition")
    sub = pool.subset(pool.labelled)
    p = shares(sub)  # (N, P, A)
    _, _, n = sub.counts()
    N, P, A = p.shape
    good = sub.correct_mask(A)
    g = np.where(good, p.sum(axis=1), -1.0).argmax(axis=1)  # a*: the correct answer with the most mass
    pg = np.take_along_axis(p, g[:, None, None].repeat(P, 1), axis=2)  # (N, P, 1)
    mu = pg - p  # (N, P, A)
    var_c = pg + p - mu**2
    nn = n[..., None].astype(float)
    var_c = np.where(nn > 1, var_c * nn / np.maximum(nn - 1, 1), 0.0)
    sw = var_c.mean(axis=1)
    noise = (var_c / np.maximum(nn, 1)).mean(axis=1)
    sb = np.clip(mu.var(axis=1, ddof=1) - noise, 0, None) if P > 1 else np.zeros_like(sw)
    gam = mu.mean(axis=1)
    present = (p.sum(axis=1) > 0) & ~good  # competitors: the wrong answers sampled
    return gam, sw, sb, present


def bias_variance(
    pool: Pool, budget: int | None = None, *, method: str = "auto", seed: int = 0, draws: int = NORMAL_DRAWS
) -> BiasVariance:
    """σ²_w, σ²_btw, and the normal-approximation accuracy next to the exact one per (K, M)."""
    budget = pool.max_budget if budget is None else budget
    pool.check_budget(budget)
    gam, sw, sb, present = moments(pool)
    cells = grid_cells(pool.n_priors, pool.n_slots, budget)
    N = gam.shape[0]
    sub = pool.subset(pool.labelled)
    normal = normal_vote(shares(sub), sub.correct_mask(gam.shape[1]), sub.gold_sampled(), cells, draws, seed)
    # the reference of a mean |error| checked against 2 points: 128 draws (SE ~0.3 points) suffice
    ex = accuracy_grid(pool, budget, cells=cells, mode="random", replace=True, method=method, seed=seed, target_se=None)
    masked = np.where(present, gam, np.inf)
    b = masked.argmin(axis=1)
    r = np.arange(N)
    has = present.any(axis=1)
    return BiasVariance(
        np.where(has, gam[r, b], np.nan),
        np.where(has, sw[r, b], np.nan),
        np.where(has, sb[r, b], np.nan),
        cells,
        normal,
        ex.acc,
    )


def normal_vote(
    p: np.ndarray, good: np.ndarray, seen: np.ndarray, cells, draws: int = NORMAL_DRAWS, seed: int = 0
) -> np.ndarray:
    """(N, C) the normal approximation's expected vote credit ("split" ties) per problem and cell (K, M).

    ``p`` (N, P, A): each prior's answer shares; ``good`` (N, A): the correct answers; ``seen`` (N,):
    gold was sampled (else the credit is 0). Per draw: a random prior order (its first K priors are a
    uniform K-subset) and, per prior, a normal vector Z_c with the one-sample multinomial covariance
    diag(p_c) − p_c p_cᵀ; the K·M counts are round(M Σ_{c ≤ K} p_c + √M Σ_{c ≤ K} Z_c), clipped at 0,
    and score the vote's credit. The same draws serve every cell.
    """
    rng = np.random.default_rng(seed)
    N, P, _ = p.shape
    out = np.zeros((N, len(cells)))
    for i in np.flatnonzero(seen):
        pc = p[i][:, p[i].sum(axis=0) > 0]  # (P, a): the answers sampled
        g = good[i][p[i].sum(axis=0) > 0]
        q = pc.sum(axis=1, keepdims=True)  # each prior's answered share (failed samples vote for nothing)
        # u = sqrt(p) ε has covariance diag(p); u − c p Σu has diag(p) − p pᵀ when c² q − 2c + 1 = 0
        c = np.where(q > 0, (1 - np.sqrt(np.clip(1 - q, 0, None))) / np.where(q > 0, q, 1), 0.0)
        u = np.sqrt(pc) * rng.standard_normal((draws, P, pc.shape[1]))
        z = u - c * pc * u.sum(axis=2, keepdims=True)
        order = np.argsort(rng.random((draws, P)), axis=1)
        cum_p = np.cumsum(pc[order], axis=1)  # (draws, P, a): sums over the first K priors of each order
        cum_z = np.cumsum(z[np.arange(draws)[:, None], order], axis=1)
        for j, (k, m) in enumerate(cells):
            counts = np.clip(np.rint(m * cum_p[:, k - 1] + np.sqrt(m) * cum_z[:, k - 1]), 0, None)
            out[i, j] = credit_array(counts, g).mean()
    return out


# -- per-prior view --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PriorStats:
    """Per-prior accuracy, failure rate and pairwise agreement."""

    names: tuple[str, ...]
    accuracy: np.ndarray | None
    """(P,) mean share of gold samples (None when label-free)."""
    failed: np.ndarray
    """(P,) share of failed samples."""
    agreement: np.ndarray
    """(P, P) mean probability that one answered sample of prior c equals one of prior d."""
    plurality_agreement: np.ndarray
    """(P,) mean share of the prior's answered samples equal to the pooled plurality answer (label-free)."""


def prior_stats(pool: Pool) -> PriorStats:
    c, f, n = pool.counts()
    valid = c / np.maximum(c.sum(axis=2), 1)[..., None]
    agree = np.einsum("ica,ida->cd", valid, valid) / pool.n_problems
    plural = c.sum(axis=1).argmax(axis=1)
    pa = np.take_along_axis(valid, plural[:, None, None].repeat(pool.n_priors, 1), axis=2)[..., 0].mean(axis=0)
    acc = None
    if not pool.label_free:
        sub = pool.subset(pool.labelled)
        acc = (sub.correct_samples().sum(axis=2) / np.maximum(sub.sizes, 1)).mean(axis=0)
    return PriorStats(pool.priors, acc, f.sum(axis=0) / np.maximum(n.sum(axis=0), 1), agree, pa)
