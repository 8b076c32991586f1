"""Pool arrays: one stored run as dense integer arrays.

``answers[i, c, j]`` is the answer id of sample ``j`` of problem ``i`` under
prior ``c`` (ids are local to a problem), ``FAILED`` (-1) for a failed sample
(answer NULL) and ``MISSING`` (-2) for padding when cells are ragged.
``gold[i]`` is the gold id (``NO_GOLD`` = -1 when the problem has no
reference). When gold was never sampled it is an id no sample has.
``also_correct[i]`` lists the problem's other correct answer ids: answers
that differ from gold yet are graded correct (two passing programs with
different behaviour, "4" and "4.0" under a grader that accepts both). They
stay separate answers in the vote, as in a live run, and any of them winning
earns credit (`vote.credit` with a set of correct answers).

Failed samples never vote. By default they still occupy their slot of the
budget (a draw of M samples may hit them: "abstain", what a real run of M
samples would get); ``drop_failed`` removes them ("excluded" in docs/method.md),
which makes cells ragged. Left out: answer strings beyond display, token
counts and timings (the analyses only need answers and gold).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import MarginalError

FAILED = -1
MISSING = -2
NO_GOLD = -1

LABEL_FREE_MSG = (
    "has no reference answers (correct is NULL for every sample): only label-free measures "
    "are available (label-free margin, agreement, label-free weights)"
)


@dataclass(frozen=True, eq=False)
class Pool:
    """One run's samples as arrays (see the module docstring)."""

    answers: np.ndarray
    """(N problems, P priors, n slots) int32 answer ids; -1 failed, -2 missing."""
    gold: np.ndarray
    """(N,) int32 gold id per problem, -1 when unknown."""
    priors: tuple[str, ...]
    """Prior names in bank order."""
    problems: tuple[str, ...]
    """Problem ids in run order."""
    run_id: str = ""
    answer_names: tuple[tuple[str, ...], ...] = ()
    """Per problem, the answer string of each id (gold first when labelled); may be empty."""
    also_correct: tuple[tuple[int, ...], ...] = ()
    """Per problem, correct answer ids other than gold (empty: gold is the only correct answer)."""

    def __post_init__(self) -> None:
        a = np.asarray(self.answers, dtype=np.int32)
        g = np.asarray(self.gold, dtype=np.int32)
        if a.ndim != 3:
            raise MarginalError(f"pool answers must be (problems, priors, samples), got shape {a.shape}")
        if g.shape != (a.shape[0],):
            raise MarginalError(f"pool gold must have one id per problem ({a.shape[0]}), got shape {g.shape}")
        if len(self.priors) != a.shape[1]:
            raise MarginalError(f"pool has {a.shape[1]} priors but {len(self.priors)} prior names")
        if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0 or not (a != MISSING).any():
            raise MarginalError(f"run {self.run_id or '(arrays)'} is empty: it holds no samples")
        if (a < MISSING).any() or (g < NO_GOLD).any():
            raise MarginalError("pool ids must be >= 0, -1 (failed) or -2 (missing); gold >= 0 or -1 (unknown)")
        pad = a == MISSING
        if (pad[:, :, :-1] & ~pad[:, :, 1:]).any():
            raise MarginalError("pool padding (-2) must come after a cell's stored samples")
        also = tuple(tuple(int(x) for x in ids) for ids in self.also_correct)
        if also and len(also) != a.shape[0]:
            raise MarginalError(f"pool also_correct must have one entry per problem ({a.shape[0]}), got {len(also)}")
        for i, ids in enumerate(also):
            if ids and (g[i] < 0 or any(x < 0 or x == g[i] for x in ids)):
                raise MarginalError(
                    f"pool also_correct of problem {i} must hold ids >= 0 other than gold, and gold must be known"
                )
        object.__setattr__(self, "also_correct", also if any(also) else ())
        a.setflags(write=False)
        g.setflags(write=False)
        object.__setattr__(self, "answers", a)
        object.__setattr__(self, "gold", g)

    # -- shape --------------------------------------------------------------
    @property
    def n_problems(self) -> int:
        return self.answers.shape[0]

    @property
    def n_priors(self) -> int:
        return self.answers.shape[1]

    @property
    def n_slots(self) -> int:
        """The most samples any (problem, prior) cell holds: the largest M."""
        return self.answers.shape[2]

    @property
    def max_budget(self) -> int:
        return self.n_priors * self.n_slots

    @property
    def labelled(self) -> np.ndarray:
        """(N,) bool: problems whose gold is known."""
        return self.gold >= 0

    @property
    def label_free(self) -> bool:
        return not self.labelled.any()

    @property
    def sizes(self) -> np.ndarray:
        """(N, P) samples stored per cell (failed included, padding not)."""
        return (self.answers != MISSING).sum(axis=2)

    def correct_mask(self, width: int) -> np.ndarray:
        """(N, width) bool: column x is True where answer id x is correct for the problem (gold or also_correct)."""
        mask = np.zeros((self.n_problems, width), bool)
        lab = np.flatnonzero((self.gold >= 0) & (self.gold < width))
        mask[lab, self.gold[lab]] = True
        for i, ids in enumerate(self.also_correct):
            mask[i, [x for x in ids if x < width]] = True
        return mask

    def correct_samples(self) -> np.ndarray:
        """(N, P, n) bool: the stored sample is a correct answer."""
        width = int(max(self.answers.max(), self.gold.max())) + 1
        mask = self.correct_mask(width)
        a = self.answers
        return (a >= 0) & np.take_along_axis(mask, np.maximum(a, 0).reshape(a.shape[0], -1), axis=1).reshape(a.shape)

    def gold_sampled(self) -> np.ndarray:
        """(N,) bool: some stored sample of the problem is correct."""
        return np.asarray(self.correct_samples().any(axis=(1, 2)))

    def require_gold(self, what: str) -> None:
        if self.label_free:
            raise MarginalError(f"{what} needs gold answers, but run {self.run_id or '(arrays)'} {LABEL_FREE_MSG}")

    def check_budget(self, budget: int) -> None:
        if not isinstance(budget, (int, np.integer)) or budget < 1:
            raise MarginalError(f"budget must be a positive integer, got {budget!r}")
        if budget > self.max_budget:
            raise MarginalError(
                f"budget {budget} is larger than the pool supports: the largest valid budget is "
                f"{self.max_budget} ({self.n_priors} priors x {self.n_slots} samples)"
            )

    def subset(self, idx: np.ndarray) -> Pool:
        """The pool restricted to some problems (by index or mask)."""
        idx = np.flatnonzero(idx) if np.asarray(idx).dtype == bool else np.asarray(idx, dtype=int)
        return replace(
            self,
            answers=self.answers[idx],
            gold=self.gold[idx],
            problems=tuple(self.problems[i] for i in idx),
            answer_names=tuple(self.answer_names[i] for i in idx) if self.answer_names else (),
            also_correct=tuple(self.also_correct[i] for i in idx) if self.also_correct else (),
        )

    def head(self, n: int) -> Pool:
        """The first ``n`` stored samples of each cell: the pool as designed, before a policy grew some
        cells beyond it (``marginal replay --grow``), so that the grown cells do not weigh more."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise MarginalError(f"samples per cell must be a positive integer, got {n!r}")
        return replace(self, answers=self.answers[:, :, :n])

    def drop_failed(self) -> Pool:
        """Failed samples removed from their cells (ragged; the vote never sees them)."""
        a = self.answers
        keep = a >= 0
        order = np.argsort(~keep, axis=2, kind="stable")
        b = np.take_along_axis(a, order, axis=2)
        b = np.where(np.take_along_axis(keep, order, axis=2), b, MISSING)
        width = max(int(keep.sum(axis=2).max()), 1)
        return replace(self, answers=b[:, :, :width])

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per problem and prior: answer counts (N, P, A), failed counts (N, P), sizes (N, P).

        Column ``A-1`` is never used by samples: ``A = max id + 2`` so that a
        never-sampled gold id always has a (zero) column.
        """
        a = self.answers
        width = int(max(a.max(), self.gold.max())) + 2
        ids = np.where(a >= 0, a, width)  # failed/missing -> dump column
        flat = (np.arange(a.shape[0] * a.shape[1])[:, None] * (width + 1) + ids.reshape(-1, a.shape[2])).ravel()
        c = np.bincount(flat, minlength=a.shape[0] * a.shape[1] * (width + 1))
        c = c.reshape(a.shape[0], a.shape[1], width + 1)[:, :, :width]
        failed = (a == FAILED).sum(axis=2)
        return c, failed, self.sizes


def pool_from_lists(
    answers: Sequence[Sequence[Sequence[object]]],
    gold: Sequence[object] | None,
    priors: Sequence[str] | None = None,
    *,
    also_correct: Sequence[Collection[object]] | None = None,
    run_id: str = "",
) -> Pool:
    """A pool from nested lists ``answers[problem][prior] = [answer, ...]`` (None = failed).

    Answers may be any hashable values (strings, ints); ``gold[problem]`` is
    the gold value (None = unknown); ``gold=None`` makes a label-free pool.
    ``also_correct[problem]``: other values that are also correct (answers
    never sampled are ignored). Cells may be ragged.
    """
    n_prob = len(answers)
    if n_prob == 0:
        raise MarginalError(f"run {run_id or '(arrays)'} is empty: no problems")
    if also_correct is not None and len(also_correct) != n_prob:
        raise MarginalError(f"also_correct must have one entry per problem ({n_prob}), got {len(also_correct)}")
    n_prior = max(len(row) for row in answers)
    width = max((len(cell) for row in answers for cell in row), default=0)
    arr = np.full((n_prob, n_prior, max(width, 1)), MISSING, dtype=np.int32)
    golds = np.full(n_prob, NO_GOLD, dtype=np.int32)
    names: list[tuple[str, ...]] = []
    also: list[tuple[int, ...]] = []
    for i, row in enumerate(answers):
        g = None if gold is None else gold[i]
        ids: dict[object, int] = {}
        if g is not None:
            ids[g] = 0
        for c, cell in enumerate(row):
            for j, x in enumerate(cell):
                if x is None:
                    arr[i, c, j] = FAILED
                else:
                    arr[i, c, j] = ids.setdefault(x, len(ids))
        if g is not None:
            golds[i] = 0
        extra = () if also_correct is None or g is None else also_correct[i]
        also.append(tuple(sorted(ids[x] for x in set(extra) if x in ids and x != g)))
        names.append(tuple(str(k) for k in ids))
    pri = tuple(priors) if priors is not None else tuple(f"p{c}" for c in range(n_prior))
    return Pool(arr, golds, pri, tuple(str(i) for i in range(n_prob)), run_id, tuple(names), tuple(also))


class _Unsampled:
    """A reference answer that no sample was graded as (it must not match an equal, ungraded string)."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


def load_pool(path, run: str | None = None, *, failed: str = "abstain") -> Pool:
    """Load a run of a SQLite store as a :class:`Pool`.

    ``run`` picks a run when the file holds several. Samples with a NULL
    answer are failed (they never vote); with ``failed="abstain"`` (default)
    they keep their slot of the budget, with ``failed="drop"`` they are
    removed. Every distinct answer is its own id, as in a live vote; the
    answers of samples graded correct are the problem's correct ids: gold is
    the reference when a sample gave it, else the most frequent correct
    answer, and the rest are ``also_correct``. A problem with a reference
    and no correct sample gets a gold id no sample has; a run with
    ``correct`` NULL everywhere is label-free. Problems with no stored
    sample yet (a pool still growing) are left out.
    """
    from ..store import Store

    if failed not in ("abstain", "drop"):
        raise MarginalError(f"failed must be 'abstain' or 'drop', got {failed!r}")
    store = Store(path, readonly=True)
    try:
        run_ids = [r for r, _ in store.runs()]
        if run is None:
            run_id = store.only_run()
        elif run not in run_ids:
            from ..errors import unknown

            raise unknown(f"run in {path}", run, run_ids)
        else:
            run_id = run
        problems = store.problems(run_id)
        priors = [p.name for p in store.priors(run_id)]
        rows = store.answers(run_id)
    finally:
        store.close()
    if not rows:
        raise MarginalError(f"run {run_id} in {path} is empty: it holds no samples")
    sampled = {r[0] for r in rows}  # a pool still being generated: only the problems sampled so far
    problems = [p for p in problems if p.id in sampled]
    prior_pos = {n: c for c, n in enumerate(priors)}
    for _, pr, *_ in rows:
        if pr not in prior_pos:  # samples under a prior the bank does not list: append it
            prior_pos[pr] = len(prior_pos)
            priors.append(pr)
    prob_pos = {p.id: i for i, p in enumerate(problems)}
    refs = [p.answer for p in problems]
    for pid, *_ in rows:
        if pid not in prob_pos:
            prob_pos[pid] = len(prob_pos)
            refs.append(None)
    label_free = all(r[4] is None for r in rows) and all(r is None for r in refs)
    cells: list[list[list[tuple[int, str | None]]]] = [[[] for _ in priors] for _ in prob_pos]
    golden: list[dict[str, int]] = [{} for _ in prob_pos]
    for pid, pr, idx, ans, cor in rows:
        i = prob_pos[pid]
        cells[i][prior_pos[pr]].append((idx, ans))
        if cor == 1 and ans is not None:
            golden[i][ans] = golden[i].get(ans, 0) + 1
    lists, golds, also = [], [], []
    for i in range(len(prob_pos)):
        lists.append([[a for _, a in sorted(cell, key=lambda t: t[0])] for cell in cells[i]])
        ref, good = refs[i], golden[i]
        g: object = ref if ref in good else min(good, key=lambda a: (-good[a], a), default=None)
        if g is None and ref is not None:  # no sample was graded correct: gold is an id no sample has
            g = _Unsampled(ref)
        golds.append(None if label_free else g)
        also.append(set(good) - {g})
    pool = pool_from_lists(lists, None if label_free else golds, priors, also_correct=also, run_id=run_id)
    ids = [""] * len(prob_pos)
    for pid, i in prob_pos.items():
        ids[i] = pid
    pool = replace(pool, problems=tuple(ids))
    return pool.drop_failed() if failed == "drop" else pool
