"""Pool arrays: one stored run as dense integer arrays.

``answers[i, c, j]`` is the answer id of sample ``j`` of problem ``i`` under
prior ``c`` (ids are local to a problem), ``FAILED`` (-1) for a failed sample
(answer NULL) and ``MISSING`` (-2) for padding when cells are ragged.
``gold[i]`` is the gold id (``NO_GOLD`` = -1 when the problem has no
reference). When gold was never sampled it is an id no sample has.

Failed samples never vote. By default they still occupy their slot of the
budget (a draw of M samples may hit them: "abstain", what a real run of M
samples would get); ``drop_failed`` removes them ("excluded" in docs/method.md),
which makes cells ragged. Left out: answer strings beyond display, token
counts and timings (the analyses only need answers and gold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
        names = tuple(self.answer_names[i] for i in idx) if self.answer_names else ()
        return Pool(
            self.answers[idx],
            self.gold[idx],
            self.priors,
            tuple(self.problems[i] for i in idx),
            self.run_id,
            names,
        )

    def drop_failed(self) -> Pool:
        """Failed samples removed from their cells (ragged; the vote never sees them)."""
        a = self.answers
        keep = a >= 0
        order = np.argsort(~keep, axis=2, kind="stable")
        b = np.take_along_axis(a, order, axis=2)
        b = np.where(np.take_along_axis(keep, order, axis=2), b, MISSING)
        width = max(int(keep.sum(axis=2).max()), 1)
        return Pool(b[:, :, :width], self.gold, self.priors, self.problems, self.run_id, self.answer_names)

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
    run_id: str = "",
) -> Pool:
    """A pool from nested lists ``answers[problem][prior] = [answer, ...]`` (None = failed).

    Answers may be any hashable values (strings, ints); ``gold[problem]`` is
    the gold value (None = unknown); ``gold=None`` makes a label-free pool.
    Cells may be ragged.
    """
    n_prob = len(answers)
    if n_prob == 0:
        raise MarginalError(f"run {run_id or '(arrays)'} is empty: no problems")
    n_prior = max(len(row) for row in answers)
    width = max((len(cell) for row in answers for cell in row), default=0)
    arr = np.full((n_prob, n_prior, max(width, 1)), MISSING, dtype=np.int32)
    golds = np.full(n_prob, NO_GOLD, dtype=np.int32)
    names: list[tuple[str, ...]] = []
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
        names.append(tuple(str(k) for k in ids))
    pri = tuple(priors) if priors is not None else tuple(f"p{c}" for c in range(n_prior))
    return Pool(arr, golds, pri, tuple(str(i) for i in range(n_prob)), run_id, tuple(names))


def load_pool(path, run: str | None = None, *, failed: str = "abstain") -> Pool:
    """Load a run of a SQLite store as a :class:`Pool`.

    ``run`` picks a run when the file holds several. Samples with a NULL
    answer are failed (they never vote); with ``failed="abstain"`` (default)
    they keep their slot of the budget, with ``failed="drop"`` they are
    removed. Answers of samples graded correct all map to the one gold id;
    a problem with a reference and no correct sample gets a gold id no
    sample has; a run with ``correct`` NULL everywhere is label-free.
    Problems with no stored sample yet (a pool still growing) are left out.
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
    cells: list[list[list[tuple[int, str | None, int | None]]]] = [[[] for _ in priors] for _ in prob_pos]
    for pid, pr, idx, ans, cor in rows:
        cells[prob_pos[pid]][prior_pos[pr]].append((idx, ans, cor))
    golden: list[set[str]] = [set() for _ in prob_pos]
    for pid, _pr, _idx, ans, cor in rows:
        if cor == 1 and ans is not None:
            golden[prob_pos[pid]].add(ans)
    lists, golds = [], []
    gold_token = object()
    for i in range(len(prob_pos)):
        has_gold = not label_free and (refs[i] is not None or golden[i])
        lists.append(
            [
                [
                    None if a is None else (gold_token if a in golden[i] else a)
                    for _, a, _ in sorted(cell, key=lambda t: t[0])
                ]
                for cell in cells[i]
            ]
        )
        golds.append(gold_token if has_gold else None)
    pool = pool_from_lists(lists, None if label_free else golds, priors, run_id=run_id)
    names = []
    for i, nm in enumerate(pool.answer_names):
        r = refs[i]
        ref = r if r is not None else (sorted(golden[i])[0] if golden[i] else "")
        names.append(tuple(ref if n == str(gold_token) else n for n in nm))
    ids = [""] * len(prob_pos)
    for pid, i in prob_pos.items():
        ids[i] = pid
    pool = Pool(pool.answers, pool.gold, pool.priors, tuple(ids), run_id, tuple(names))
    return pool.drop_failed() if failed == "drop" else pool
