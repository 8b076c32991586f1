"""Expected majority-vote accuracy of every allocation (K priors x M samples), from a pool.

For each problem and each cell (K, M) with K*M <= B: the expected credit of
the plain majority vote when M samples per prior are drawn from the stored
ones, without replacement (exact subsampling, multivariate hypergeometric)
or with replacement (bootstrap, multinomial), over the first K priors in bank
order or K priors at random (averaged over all K-subsets). Credit is
``marginal.vote``'s: 1/|T| when gold is among the tied top answers T
("split"), or 1 only when it is the single top answer ("strict"); an
all-failed draw gets 0.

Exact: per prior, the distribution of its vote-count vector; convolved over
priors (first K: one pass in bank order serves every K; random: a
subset-size dynamic programme). Problems where only gold and at most one
other answer occur reduce to the 1-D difference X_gold − X_other, convolved
by FFT for all such problems at once. Otherwise states are count vectors,
so it is exact while the state space is small (few distinct answers); past
``max_states`` (or the ``exact_cells`` work bound of method "auto") a
problem's cells fall back to Monte Carlo with common random
numbers: one random permutation per (replicate, prior) gives nested
subsamples (the first M of a random permutation is a uniform M-subset), and
one random prior order per replicate gives nested prior sets, so one set of
draws serves every (K, M) cell; its standard error is reported per problem
and cell, and more replicates are drawn (Neyman-allocated over problems)
until every cell's dataset SE is at most ``target_se`` (``TARGET_SE``, 0.2/3
points). Without replacement, answers a problem stores only once are counted
in one lump column (exact: each is drawn at most once). When a cell asks
for more samples than a (ragged) cell stores, all of them are taken. Never
"the first M stored samples".

Left out: weighted votes (see ``weights``), allocations other than K x M,
lumping in the exact path (a problem with many answers stays Monte Carlo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..errors import MarginalError
from ..vote import TIES, credit, credit_array, tally, top_share
from .pool import MISSING, Pool

MODES = ("first", "random")
METHODS = ("auto", "exact", "mc")


class _TooBig(Exception):
    pass


@dataclass(frozen=True, eq=False)
class Grid:
    """Expected vote credit per problem and allocation cell."""

    cells: tuple[tuple[int, int], ...]
    """(K, M) per column."""
    acc: np.ndarray
    """(N, C) expected credit per problem and cell."""
    mc_var: np.ndarray
    """(N, C) variance of each Monte Carlo estimate (0 where exact)."""
    exact: np.ndarray
    """(N, C) True where a problem's cell was computed exactly (else Monte Carlo)."""
    budget: int
    mode: str = "first"
    replace: bool = False
    ties: str = "split"

    @property
    def mean(self) -> np.ndarray:
        """(C,) dataset accuracy per cell."""
        return self.acc.mean(axis=0)

    @property
    def se(self) -> np.ndarray:
        """(C,) Monte Carlo standard error of the dataset accuracy (0 when all exact)."""
        return np.sqrt(self.mc_var.sum(axis=0)) / self.acc.shape[0]

    @property
    def sampling_se(self) -> np.ndarray:
        """(C,) standard error over problems (the dataset as a sample) plus Monte Carlo error."""
        n = self.acc.shape[0]
        between = self.acc.var(axis=0, ddof=1) / n if n > 1 else np.zeros(len(self.cells))
        return np.sqrt(between + self.se**2)

    def index(self, k: int, m: int) -> int:
        try:
            return self.cells.index((k, m))
        except ValueError:
            raise MarginalError(f"allocation K={k}, M={m} is not in the grid (budget {self.budget})") from None

    def at(self, k: int, m: int) -> float:
        return float(self.mean[self.index(k, m)])

    def table(self) -> np.ndarray:
        """(Kmax, Mmax) dataset accuracy, NaN outside the grid; [K-1, M-1]."""
        kmax = max(k for k, _ in self.cells)
        mmax = max(m for _, m in self.cells)
        t = np.full((kmax, mmax), np.nan)
        for j, (k, m) in enumerate(self.cells):
            t[k - 1, m - 1] = self.mean[j]
        return t

    def best(self) -> tuple[int, int]:
        """The cell with the highest dataset accuracy (ties: fewer samples, then more priors)."""
        order = sorted(
            range(len(self.cells)),
            key=lambda j: (-round(float(self.mean[j]), 12), self.cells[j][0] * self.cells[j][1], -self.cells[j][0]),
        )
        return self.cells[order[0]]


def grid_cells(n_priors: int, n_slots: int, budget: int) -> tuple[tuple[int, int], ...]:
    """Every (K, M) with K <= P, M <= n and K*M <= B, sorted by K then M."""
    return tuple((k, m) for k in range(1, n_priors + 1) for m in range(1, n_slots + 1) if k * m <= budget)


def _check_opts(mode: str, ties: str, method: str) -> None:
    if mode not in MODES:
        raise MarginalError(f"prior mode must be one of {', '.join(MODES)}, got {mode!r}")
    if ties not in TIES:
        raise MarginalError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    if method not in METHODS:
        raise MarginalError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


# -- exact ---------------------------------------------------------------------------
class _LogFact:
    def __init__(self, n: int):
        self.t = np.array([math.lgamma(i + 1) for i in range(n + 1)])

    def comb(self, n, k):
        n = np.asarray(n)
        k = np.asarray(k)
        return self.t[n] - self.t[k] - self.t[n - k]


def _prior_dist(m, f, n, M, replace, pows, lf, cap) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of one prior's vote vector for M draws: (keys, probs)."""
    if n == 0:
        return np.zeros(1, np.int64), np.ones(1)
    Mp = M if replace else min(M, n)
    tot = np.zeros(1, np.int64)
    key = np.zeros(1, np.int64)
    lp = np.zeros(1)
    for a in np.flatnonzero(m):
        top = Mp if replace else min(int(m[a]), Mp)
        x = np.arange(top + 1)
        t2 = (tot[:, None] + x[None, :]).ravel()
        keep = t2 <= Mp
        if keep.sum() > cap:
            raise _TooBig
        key = (key[:, None] + x[None, :] * pows[a]).ravel()[keep]
        term = (x * math.log(m[a] / n) - lf.t[x]) if replace else lf.comb(int(m[a]), x)
        lp = (lp[:, None] + term[None, :]).ravel()[keep]
        tot = t2[keep]
    r = Mp - tot
    if replace:
        if f == 0:
            ok = r == 0
            lp = lp + lf.t[Mp]
        else:
            ok = np.ones(len(r), bool)
            lp = lp + r * math.log(f / n) - lf.t[r] + lf.t[Mp]
    else:
        ok = r <= f
        rr = np.minimum(r, f)
        lp = lp + lf.comb(f, rr) - lf.comb(n, Mp)
    return key[ok], np.exp(lp[ok])


def _accumulate(k, p, space) -> tuple[np.ndarray, np.ndarray]:
    """Sum probabilities of equal keys: dense bincount when the key space is small, else sort."""
    if space <= max(4096, 4 * len(k)):
        dense = np.bincount(k, weights=p, minlength=space)
        u = np.flatnonzero(dense)
        return u.astype(np.int64), dense[u]
    u, inv = np.unique(k, return_inverse=True)
    return u, np.bincount(inv.ravel(), weights=p, minlength=len(u))


def _conv(k1, p1, k2, p2, cap, space=1 << 62) -> tuple[np.ndarray, np.ndarray]:
    if len(k1) * len(k2) > 20 * cap:
        raise _TooBig
    k = (k1[:, None] + k2[None, :]).ravel()
    p = (p1[:, None] * p2[None, :]).ravel()
    u, q = _accumulate(k, p, space)
    if len(u) > cap:
        raise _TooBig
    return u, q


def _merge(k1, p1, k2, p2, space=1 << 62) -> tuple[np.ndarray, np.ndarray]:
    return _accumulate(np.concatenate([k1, k2]), np.concatenate([p1, p2]), space)


def _exact_problem(m, f, n, good, cells, mode, replace, ties, max_states, lf):
    """Exact expected credit of one problem per cell, and which cells were exact; ``good`` (A,) marks
    the correct columns of the counts ``m`` (P, A).

    A pass over priors for one M stops at the first state space past
    ``max_states``; the cells it did not reach are left to Monte Carlo.
    """
    P = m.shape[0]
    out = np.zeros(len(cells))
    ok = np.zeros(len(cells), bool)
    active = np.flatnonzero(m.sum(axis=0))
    if not good[active].any():
        return out, ~ok  # no correct answer sampled: the vote can never be right
    if len(active) == 1 or (ties == "split" and good[active].all()):
        # every answer sampled is correct (and a tie of correct answers is full credit): right unless every
        # drawn sample failed
        for j, (k, M) in enumerate(cells):
            nn, ff = n.astype(float), f.astype(float)
            if replace:
                q = np.where(nn > 0, (ff / np.maximum(nn, 1)) ** M, 1.0)
            else:
                q = np.ones(P)
                for t in range(M):
                    q *= np.where(t < np.minimum(M, n), (ff - t).clip(min=0) / np.maximum(nn - t, 1), 1.0)
            if mode == "first":
                out[j] = 1 - q[:k].prod()
            else:
                e = np.zeros(k + 1)
                e[0] = 1
                for c in range(P):
                    e[1:] = e[1:] + e[:-1] * q[c]
                out[j] = 1 - e[k] / math.comb(P, k)
        return out, ~ok
    m = m[:, active]
    good = good[active]
    A = len(active)
    T = max(k * mm for k, mm in cells)
    base = T + 1
    if A * math.log2(base) > 62:
        return out, ok
    pows = base ** np.arange(A, dtype=np.int64)
    space = base**A
    by_m: dict[int, list[tuple[int, int]]] = {}
    for j, (k, mm) in enumerate(cells):
        by_m.setdefault(mm, []).append((k, j))

    def value(keys, probs):
        cnt = (keys[:, None] // pows[None, :]) % base
        return float(probs @ credit_array(cnt, good, ties))

    for M, wanted in by_m.items():
        kmax = max(k for k, _ in wanted)
        col = {k: j for k, j in wanted}
        try:
            dists = [
                _prior_dist(m[c], int(f[c]), int(n[c]), M, replace, pows, lf, max_states)
                for c in range(P if mode == "random" else kmax)
            ]
            if mode == "first":
                keys, probs = np.zeros(1, np.int64), np.ones(1)
                for c in range(kmax):
                    keys, probs = _conv(keys, probs, *dists[c], max_states, space)
                    if c + 1 in col:
                        out[col[c + 1]] = value(keys, probs)
                        ok[col[c + 1]] = True
            else:
                D: list[tuple[np.ndarray, np.ndarray] | None] = [None] * (kmax + 1)
                D[0] = (np.zeros(1, np.int64), np.ones(1))
                for c in range(P):
                    for j in range(min(c + 1, kmax), 0, -1):
                        prev, cur = D[j - 1], D[j]
                        if prev is None:
                            continue
                        add = _conv(*prev, *dists[c], max_states, space)
                        D[j] = cur = add if cur is None else _merge(*cur, *add, space)
                        if len(cur[0]) > max_states:
                            raise _TooBig
                for k, j in col.items():
                    dk = D[k]
                    assert dk is not None  # K <= kmax <= P priors: every K was reached
                    out[j] = value(*dk) / math.comb(P, k)
                    ok[j] = True
        except _TooBig:
            continue
    return out, ok


def _exact_two(cg, co, f, n, gold_col_ok, cells, mode, replace, ties, lf):
    """Exact credit, vectorized over problems whose votes can only go to gold or one other answer.

    With two candidates the vote is decided by D = X_gold − X_other, so each
    prior contributes a 1-D distribution of D and priors combine by
    convolution (FFT, batched over problems and K). Returns (N2, C).
    """
    N2, P = cg.shape
    out = np.zeros((N2, len(cells)))
    by_m: dict[int, list[tuple[int, int]]] = {}
    for j, (k, m) in enumerate(cells):
        by_m.setdefault(m, []).append((k, j))
    t = lf.t
    for M, wanted in by_m.items():
        kmax = max(k for k, _ in wanted)
        x = np.arange(M + 1)
        xg, xo = x[:, None], x[None, :]
        mp = np.minimum(M, n) if not replace else np.full_like(n, M)  # (N2, P)
        r = mp[..., None, None] - xg - xo  # draws that failed
        if replace:
            with np.errstate(divide="ignore", invalid="ignore"):
                nn = np.maximum(n, 1)[..., None, None].astype(float)
                lg = np.where(cg[..., None, None] > 0, np.log(cg[..., None, None] / nn), -np.inf)
                lo = np.where(co[..., None, None] > 0, np.log(co[..., None, None] / nn), -np.inf)
                lfail = np.where(f[..., None, None] > 0, np.log(f[..., None, None] / nn), -np.inf)
                rr = np.clip(r, 0, None)
                lp = (
                    t[M]
                    - t[xg]
                    - t[xo]
                    - t[rr]
                    + np.where(xg > 0, xg * lg, 0.0)
                    + np.where(xo > 0, xo * lo, 0.0)
                    + np.where(rr > 0, rr * lfail, 0.0)
                )
            ok = r >= 0
        else:
            cgb, cob, fb, nb = (a[..., None, None] for a in (cg, co, f, n))
            ok = (xg <= cgb) & (xo <= cob) & (r >= 0) & (r <= fb)
            xg_c, xo_c, r_c = np.minimum(xg, cgb), np.minimum(xo, cob), np.clip(np.minimum(r, fb), 0, None)
            mpb = mp[..., None, None]
            lp = (
                t[cgb]
                - t[xg_c]
                - t[cgb - xg_c]
                + t[cob]
                - t[xo_c]
                - t[cob - xo_c]
                + t[fb]
                - t[r_c]
                - t[fb - r_c]
                - (t[nb] - t[mpb] - t[nb - mpb])
            )
        pmf = np.where(ok, np.exp(np.where(ok, lp, 0.0)), 0.0)
        empty = n == 0
        pmf[empty] = 0.0
        pmf[empty, 0, 0] = 1.0
        d = np.zeros((N2, P, 2 * M + 1))
        for a in range(M + 1):
            d[..., a : a + M + 1] += pmf[..., a, ::-1]
        z = pmf[..., 0, 0]  # P(no vote from this prior)
        L = 2 * kmax * M + 1
        nfft = 1 << (L - 1).bit_length()
        F = np.fft.rfft(d, nfft, axis=-1)
        if mode == "first":
            spec = np.cumprod(F[:, :kmax], axis=1)
            zk = np.cumprod(z[:, :kmax], axis=1)
            dist = np.fft.irfft(spec, nfft, axis=-1)
        else:
            E = np.zeros((N2, kmax + 1, F.shape[-1]), complex)
            e = np.zeros((N2, kmax + 1))
            E[:, 0] = 1
            e[:, 0] = 1
            for c in range(P):
                top = min(c + 1, kmax)
                E[:, 1 : top + 1] = E[:, 1 : top + 1] + E[:, :top] * F[:, c : c + 1]
                e[:, 1 : top + 1] = e[:, 1 : top + 1] + e[:, :top] * z[:, c : c + 1]
            norm = np.array([math.comb(P, k) for k in range(1, kmax + 1)], float)
            dist = np.fft.irfft(E[:, 1:], nfft, axis=-1) / norm[None, :, None]
            zk = e[:, 1:] / norm[None, :]
        for k, j in wanted:
            centre = k * M
            dk = dist[:, k - 1]
            win = dk[:, centre + 1 : 2 * centre + 1].sum(axis=1)
            tie = dk[:, centre] - zk[:, k - 1]
            out[:, j] = win + (0.5 * tie if ties == "split" else 0.0)
    out[~gold_col_ok] = 0.0
    return np.clip(out, 0.0, 1.0)


# -- Monte Carlo with common random numbers ------------------------------------------
def relabel(answers: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids with gold -> 0, other answers -> 1.., failed/missing -> W (abstain); returns (ids, W)."""
    g = gold[:, None, None]
    ids = np.where(answers == g, 0, np.where(answers < g, answers + 1, answers))
    W = int(max(answers.max(), gold.max())) + 2
    ids = np.where(answers >= 0, ids, W)
    return ids.astype(np.int32), W


def relabel_pool(pool: Pool) -> tuple[np.ndarray, int, np.ndarray]:
    """`relabel` of a pool's answers, with the (N, W) mask of its correct answers in the new ids."""
    ids, W = relabel(pool.answers, pool.gold)
    mask = pool.correct_mask(W)
    new = relabel(np.broadcast_to(np.arange(W, dtype=np.int32), (pool.n_problems, 1, W)), pool.gold)[0][:, 0]
    good = np.zeros_like(mask)
    np.put_along_axis(good, new, mask, axis=1)
    return ids, W, good


def draw_orders(
    ids: np.ndarray, sizes: np.ndarray, reps: int, replace: bool, mode: str, rng: np.random.Generator
) -> np.ndarray:
    """(R, N, P, n) drawn ids: slot j of a replicate is its (j+1)-th draw; priors reordered at random in 'random' mode.

    Without replacement the draws are a uniform random permutation of the
    stored samples (padding last); with replacement, independent uniform picks.
    """
    R = reps
    N, P, n = ids.shape
    if replace:
        u = rng.random((R, N, P, n))
        j = np.minimum((u * sizes[None, :, :, None]).astype(np.int64), n - 1)
        drawn = np.take_along_axis(np.broadcast_to(ids, (R, N, P, n)), j, axis=3)
    else:
        keys = rng.random((R, N, P, n))
        keys += (np.arange(n)[None, None, :] >= sizes[:, :, None])[None] * 2.0
        perm = np.argsort(keys, axis=3)
        drawn = np.take_along_axis(np.broadcast_to(ids, (R, N, P, n)), perm, axis=3)
    if mode == "random":
        order = np.argsort(rng.random((R, N, P)), axis=2)
        drawn = np.take_along_axis(drawn, order[..., None], axis=2)
    return drawn


def compact(
    ids: np.ndarray, W: int, lump: bool, good: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per problem, `relabel`'s ids renumbered densely (gold stays 0), and, with ``lump``, every
    wrong answer stored exactly once for that problem moved to one lump column.

    Drawn without replacement, a once-stored answer is drawn at most once, so the lump's count is the
    number of distinct such answers drawn, each with a count of 1: `lumped_credit` scores that exactly.
    ``good`` (N, W) marks the correct ids (default: gold, id 0); correct answers are never lumped.
    Returns (ids, widths, good): per problem, columns 0 .. w-2 are answers, w-1 the lump (0 when
    nothing is lumped) and W the failed/missing id, where w is its width; ``good`` (N, W + 1) marks
    the correct columns of the new ids.
    """
    N = ids.shape[0]
    flat = ids.reshape(N, -1)
    cnt = np.zeros((N, W + 1), np.int64)
    np.add.at(cnt, (np.repeat(np.arange(N), flat.shape[1]), flat.ravel()), 1)
    col = np.arange(W + 1)
    right = np.zeros((N, W + 1), bool)
    right[:, 0] = True
    if good is not None:
        right[:, :W] |= good
    once = (cnt == 1) & ~right & (col < W) & lump
    keep = ((cnt > 0) | (col == 0)) & ~once & (col < W)
    rank = np.cumsum(keep, axis=1) - 1
    widths = keep.sum(axis=1) + 1
    new = np.where(keep, rank, np.where(once, widths[:, None] - 1, W))
    good_new = np.zeros((N, W + 1), bool)
    rows, cols = np.nonzero(keep & right)
    good_new[rows, rank[rows, cols]] = True
    return np.take_along_axis(new, flat, axis=1).reshape(ids.shape).astype(np.int32), widths, good_new


def lumped_credit(counts: np.ndarray, ties: str, good: np.ndarray | None = None) -> np.ndarray:
    """`credit_array` with, in the last column, how many distinct wrong answers were drawn once each
    (see `compact`); ``good`` marks the correct columns of the others (broadcast; default: column 0)."""
    named, lump = counts[..., :-1], counts[..., -1]
    mx = np.maximum(named.max(axis=-1), lump > 0)
    at_top = (named == mx[..., None]) & (mx > 0)[..., None]
    if good is None:
        good = np.arange(named.shape[-1]) == 0
    return top_share(at_top.sum(axis=-1) + np.where(mx == 1, lump, 0), (at_top & good).sum(axis=-1), ties)


def _mc_problems(pool: Pool, idx: np.ndarray, cells, mode, replace, ties, reps, rng, mem=24_000_000):
    """Monte Carlo (common random numbers) estimate and its variance for some problems.

    Problems go in chunks of similar width (answers after `compact`), each chunk counted over its own width."""
    out = np.zeros((len(idx), len(cells)))
    var = np.zeros((len(idx), len(cells)))
    if len(idx) == 0:
        return out, var
    ids_all, W, good_all = relabel_pool(pool.subset(idx))
    ids_all, widths, good_all = compact(ids_all, W, not replace, good_all)
    sizes_all = pool.sizes[idx]
    N, P, n = ids_all.shape
    by_m: dict[int, list[tuple[int, int]]] = {}
    for j, (k, m) in enumerate(cells):
        by_m.setdefault(m, []).append((k, j))
    mmax = max(by_m)
    dt = np.int8 if max(k * m for k, m in cells) <= 127 else np.int16
    order = np.argsort(widths, kind="stable")
    s = 0
    while s < N:
        chunk = max(1, mem // max(1, reps * P * (int(widths[order[s]]) + 1)))
        w = int(widths[order[min(N, s + chunk) - 1]])  # the widest of those (sorted by width)
        chunk = max(1, mem // max(1, reps * P * (w + 1)))
        rows = order[s : s + chunk]
        w = int(widths[rows].max())
        ids, own = ids_all[rows], (widths[rows] - 1)[:, None, None]
        ids = np.where(ids == W, w, np.where(ids == own, w - 1, ids))  # lump -> column w-1; failed -> w, not counted
        lab = np.arange(w + 1, dtype=np.int32)
        good = good_all[rows, : w - 1]
        drawn = draw_orders(ids, sizes_all[rows], reps, replace, mode, rng)
        counts = np.zeros(drawn.shape[:3] + (w + 1,), dt)
        for M in range(1, mmax + 1):
            counts += drawn[..., M - 1, None] == lab
            if M not in by_m:
                continue
            kmax = max(k for k, _ in by_m[M])
            cum = np.cumsum(counts[:, :, :kmax, :w], axis=2, dtype=dt)
            for k, j in by_m[M]:
                cr = lumped_credit(cum[:, :, k - 1, :], ties, good)
                out[rows, j] = cr.mean(axis=0)
                var[rows, j] = cr.var(axis=0, ddof=1) / reps if reps > 1 else 0.25
        s += len(rows)
    return out, var


def mc_cell(
    pool: Pool,
    k: int,
    m: int,
    *,
    reps: int,
    mode: str = "first",
    replace: bool = False,
    ties: str = "split",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain independent Monte Carlo of one cell: fresh draws of M per prior; (mean, var of mean) per problem."""
    rng = np.random.default_rng(seed)
    pool.require_gold("vote accuracy")
    pool = pool.subset(pool.labelled)
    ids, W, good = relabel_pool(pool)
    sizes = pool.sizes
    lab = np.arange(W, dtype=np.int32)
    N = ids.shape[0]
    chunk = max(1, 24_000_000 // max(1, reps * k * max(m, W)))
    out, var = np.zeros(N), np.zeros(N)
    for s in range(0, N, chunk):
        sub, sz = ids[s : s + chunk], sizes[s : s + chunk]
        if mode == "random":
            pick = np.argsort(rng.random((reps, len(sub), pool.n_priors)), axis=2)[:, :, :k]
        else:
            pick = np.broadcast_to(np.arange(k), (reps, len(sub), k))
        cells = np.take_along_axis(np.broadcast_to(sub, (reps,) + sub.shape), pick[..., None], axis=2)
        csz = np.take_along_axis(np.broadcast_to(sz, (reps,) + sz.shape), pick, axis=2)
        if replace:
            j = np.minimum((rng.random(csz.shape + (m,)) * csz[..., None]).astype(np.int64), ids.shape[2] - 1)
        else:
            keys = rng.random(cells.shape) + (np.arange(ids.shape[2]) >= csz[..., None]) * 2.0
            j = np.argpartition(keys, m - 1, axis=3)[..., :m] if m < ids.shape[2] else np.argsort(keys, axis=3)[..., :m]
        d = np.take_along_axis(cells, j, axis=3).reshape(reps, len(sub), -1)
        cnt = (d[..., None] == lab).sum(axis=2)
        cr = credit_array(cnt, good[s : s + chunk], ties)
        out[s : s + chunk] = cr.mean(axis=0)
        var[s : s + chunk] = cr.var(axis=0, ddof=1) / reps
    return out, var


TARGET_SE = 0.002 / 3
"""Default largest Monte Carlo standard error of a cell's dataset accuracy: 0.2 points at 3 SE
(the largest error over a grid's cells, which common random numbers make move together, stays
within 0.2 points; at 2 SE it did not always)."""
MAX_REPS = 1 << 16
"""Default cap on Monte Carlo replicates per problem when drawing towards ``TARGET_SE``."""


def _mc_adaptive(pool, todo, miss, cells, mode, replace, ties, reps, seed, target_se, max_reps):
    """`_mc_problems` with more replicates, in rounds, until the largest cell SE over the labelled
    problems (only the cells left to Monte Carlo, ``miss``) is <= ``target_se`` or no problem may draw more.

    Each round gives problem i the replicates R_i = max over cells j of s_ij Σ_i s_ij / (N target)²,
    s_ij the per-draw SD of its cell j: for each cell that alone makes Σ_i s_ij² / R_ij / N² = target²
    (Neyman allocation), so the largest meets every cell and near-certain problems draw no more. Aimed
    20% past the target (the SDs are estimates), the extra draws rounded up to a power of sqrt(2)."""
    rng = np.random.default_rng(seed)
    est, v = _mc_problems(pool, todo, cells, mode, replace, ties, reps, rng)
    drawn = np.full(len(todo), reps)
    n_lab = int(pool.labelled.sum())
    while target_se is not None:
        vm = np.where(miss, v, 0.0)
        if np.sqrt(vm.sum(axis=0)).max() / n_lab <= target_se:
            break
        sd = np.sqrt(vm * drawn[:, None])
        want = (1.2 * sd * sd.sum(axis=0) / (n_lab * target_se) ** 2).max(axis=1)
        step = np.ceil(2 * np.log2(np.maximum(want - drawn, 1))) / 2  # a few batch sizes: powers of sqrt(2)
        more = np.where(want > drawn, np.ceil(2.0**step), 0).astype(np.int64)
        more = np.minimum(more, max_reps - drawn)
        if not (more > 0).any():
            break
        for r in np.unique(more[more > 0]):
            rows = np.flatnonzero(more == r)
            e2, v2 = _mc_problems(pool, todo[rows], cells, mode, replace, ties, int(r), rng)
            w = (r / (drawn[rows] + r))[:, None]
            est[rows], v[rows] = (1 - w) * est[rows] + w * e2, (1 - w) ** 2 * v[rows] + w**2 * v2
            drawn[rows] += r
    return est, v


# -- public --------------------------------------------------------------------------
def _grid_cells_of(pool: Pool, budget: int, cells: tuple[tuple[int, int], ...] | None) -> tuple[tuple[int, int], ...]:
    """The cells asked for (every K x M <= budget by default), checked against the pool's shape."""
    if cells is None:
        return grid_cells(pool.n_priors, pool.n_slots, budget)
    cells = tuple((int(k), int(m)) for k, m in cells)
    for k, m in cells:
        if not (1 <= k <= pool.n_priors and 1 <= m <= pool.n_slots):
            raise MarginalError(
                f"allocation K={k}, M={m} is outside the pool ({pool.n_priors} priors x {pool.n_slots} samples)"
            )
    return cells


def _exact_pass(
    pool: Pool,
    cells: tuple[tuple[int, int], ...],
    mode: str,
    replace: bool,
    ties: str,
    method: str,
    max_states: int,
    exact_cells: int,
    acc: np.ndarray,
    done: np.ndarray,
) -> None:
    """Fill ``acc`` and ``done`` for the (problem, cell) pairs computed exactly (see `accuracy_grid`)."""
    lab = pool.labelled
    c, f, n = pool.counts()
    lf = _LogFact(int(max(n.max(), max(m for _, m in cells))) + 2)
    good = pool.correct_mask(c.shape[2])
    li = np.flatnonzero(lab)
    seen = c[li].sum(axis=1) > 0
    n_good = (seen & good[li]).sum(axis=1)
    sampled = n_good > 0
    n_active = seen.sum(axis=1)
    # no correct answer sampled: exactly 0; one correct answer plus at most one other: vectorized 1-D path
    zero = li[~sampled]
    done[zero] = True
    two = (n_good == 1) & (n_active <= 2)
    if two.any():
        i2 = li[two]
        cg = (c[i2] * good[i2][:, None, :]).sum(axis=2)
        co = c[i2].sum(axis=2) - cg
        acc[i2] = _exact_two(cg, co, f[i2], n[i2], np.ones(len(i2), bool), cells, mode, replace, ties, lf)
        done[i2] = True
    more = sampled & ~two
    rest = li[more]
    rest = rest[np.argsort(n_active[more], kind="stable")]  # cheapest first
    work, unit = 0, len(cells) * (pool.n_priors if mode == "random" else 1)  # random: P x the passes
    for i in rest:
        if method == "auto" and work + unit > exact_cells:
            break
        work += unit
        acc[i], done[i] = _exact_problem(c[i], f[i], n[i], good[i], cells, mode, replace, ties, max_states, lf)
        if method == "exact" and not done[i].all():
            raise MarginalError(
                f"problem {pool.problems[i]} has too many vote states for exact accuracy "
                f"(> {max_states}); use method='auto' or 'mc'"
            )


def accuracy_grid(
    pool: Pool,
    budget: int | None = None,
    *,
    cells: tuple[tuple[int, int], ...] | None = None,
    mode: str = "first",
    replace: bool = False,
    ties: str = "split",
    method: str = "auto",
    reps: int = 128,
    seed: int = 0,
    max_states: int = 4_000,
    exact_cells: int = 5_000,
    target_se: float | None = TARGET_SE,
    max_reps: int = MAX_REPS,
) -> Grid:
    """Expected majority-vote accuracy for every (K, M) with K*M <= budget (see module docstring).

    ``method``: "exact" (error if a problem's state space passes
    ``max_states``), "mc" (Monte Carlo for every problem), "auto" (exact
    where small, Monte Carlo elsewhere). Problems whose votes can only go to
    gold or one other answer are exact in a vectorized pass; problems with
    more answers use the count-vector convolution, which "auto" spends on
    at most ``exact_cells`` (problem, cell) pairs, fewest answers first,
    leaving the rest to Monte Carlo (a deterministic work bound). ``budget``
    defaults to the largest the pool supports.

    Monte Carlo starts with ``reps`` replicates and, while the largest
    standard error of a cell's dataset accuracy (`Grid.se`) is above
    ``target_se`` (a fraction; the default, ``TARGET_SE``, puts every cell
    within 0.2 points at 3 SE), draws more for the same problems, sized from the
    standard error seen, up to ``max_reps`` in all; ``target_se=None`` draws
    exactly ``reps`` (see `_mc_adaptive` for how the draws are shared out).
    """
    _check_opts(mode, ties, method)
    pool.require_gold("vote accuracy")
    if budget is None:
        budget = pool.max_budget
    pool.check_budget(budget)
    cells = _grid_cells_of(pool, budget, cells)
    lab = pool.labelled
    N = pool.n_problems
    acc = np.zeros((N, len(cells)))
    var = np.zeros((N, len(cells)))
    done = np.zeros((N, len(cells)), bool)
    if method != "mc":
        _exact_pass(pool, cells, mode, replace, ties, method, max_states, exact_cells, acc, done)
    todo = np.flatnonzero(lab & ~done.all(axis=1))
    if len(todo):
        miss = ~done[todo]
        est, v = _mc_adaptive(pool, todo, miss, cells, mode, replace, ties, reps, seed, target_se, max_reps)
        acc[todo] = np.where(miss, est, acc[todo])
        var[todo] = np.where(miss, v, 0.0)
    keep = np.flatnonzero(lab)
    return Grid(cells, acc[keep], var[keep], done[keep], int(budget), mode, replace, ties)


# -- pass@k and oracle ---------------------------------------------------------------
def pass_at_k(n, c, k: int) -> np.ndarray:
    """Unbiased pass@k = 1 - C(n-c, k)/C(n, k) (Chen et al. 2021), elementwise; needs k <= n."""
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    if np.any(k > n):
        raise MarginalError(f"pass@{k} needs at least {k} samples per problem, got {int(n.min())}")
    out = np.ones(np.broadcast(n, c).shape)
    nb, cb = np.broadcast_arrays(n, c)
    for idx in np.ndindex(out.shape):
        nn, cc = int(nb[idx]), int(cb[idx])
        if nn - cc < k:
            continue
        out[idx] = 1.0 - float(np.prod(1.0 - k / np.arange(nn - cc + 1, nn + 1)))
    return out


def pool_pass_at_k(pool: Pool, k: int) -> float:
    """Dataset pass@k over each problem's whole pool (all priors; failed samples count as wrong)."""
    pool.require_gold("pass@k")
    lab = pool.labelled
    a = pool.answers[lab]
    n = (a != MISSING).sum(axis=(1, 2))
    c = pool.correct_samples()[lab].sum(axis=(1, 2))
    return float(pass_at_k(n, c, k).mean())


def oracle_grid(pool: Pool, budget: int | None = None, *, mode: str = "first", replace: bool = False) -> Grid:
    """Exact probability that gold is among the K x M drawn samples (the oracle / pass@KM of an allocation)."""
    _check_opts(mode, "split", "exact")
    pool.require_gold("the oracle")
    budget = pool.max_budget if budget is None else budget
    pool.check_budget(budget)
    cells = grid_cells(pool.n_priors, pool.n_slots, budget)
    lab = pool.labelled
    a = pool.answers[lab]
    n = (a != MISSING).sum(axis=2)
    g = pool.correct_samples()[lab].sum(axis=2)
    N, P = n.shape
    acc = np.zeros((N, len(cells)))
    for j, (k, m) in enumerate(cells):
        if replace:
            q = np.where(n > 0, (1 - g / np.maximum(n, 1)) ** m, 1.0)
        else:
            mp = np.minimum(m, n)
            q = np.ones((N, P))
            for t in range(m):
                q *= np.where(t < mp, (n - g - t).clip(min=0) / np.maximum(n - t, 1), 1.0)
        if mode == "first":
            acc[:, j] = 1 - q[:, :k].prod(axis=1)
        else:
            e = np.zeros((N, k + 1))
            e[:, 0] = 1
            for c in range(P):
                e[:, 1:] = e[:, 1:] + e[:, :-1] * q[:, c : c + 1]
            acc[:, j] = 1 - e[:, k] / math.comb(P, k)
    return Grid(cells, acc, np.zeros_like(acc), np.ones(acc.shape, bool), int(budget), mode, replace, "split")


def brute_force_accuracy(pool: Pool, k: int, m: int, *, mode="first", replace=False, ties="split") -> np.ndarray:
    """Reference: per-problem credit by enumerating every subsample (tiny pools only)."""
    from itertools import product

    out = []
    for i in np.flatnonzero(pool.labelled):
        a = pool.answers[i]
        good = {str(int(pool.gold[i]))} | {str(x) for x in (pool.also_correct[i] if pool.also_correct else ())}
        sets = [tuple(range(k))] if mode == "first" else list(combinations(range(pool.n_priors), k))
        tot = 0.0
        for S in sets:
            per = []
            for c in S:
                stored = [x for x in a[c] if x != MISSING]
                if replace:
                    per.append(list(product(stored, repeat=m)) if stored else [()])
                else:
                    per.append(list(combinations(stored, min(m, len(stored)))))
            s_tot, s_n = 0.0, 0
            for combo in product(*per):
                s_n += 1
                s_tot += credit(tally([[str(x) if x >= 0 else None for x in draw] for draw in combo]), good, ties)
            tot += s_tot / s_n
        out.append(tot / len(sets))
    return np.array(out)
