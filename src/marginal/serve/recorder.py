"""`Recorder`: every request's samples and decisions into the SQLite store (``--store``).

Requests with the same settings (task, model, sampling, priors, policy and budget: a
`marginal.runner.RunPlan`'s identity) share one run; other settings get their own run
beside it in the same file (``marginal analyze FILE --run ID`` then picks one). Each
request is one problem (its id is the response id, its question the last user message,
no reference: analyses use the label-free measures), added when it arrives; each policy
step's samples and decision are committed together, so a killed server loses at most the
steps in flight. All writes run on one writer thread, in order, off the event loop; a failed
write is logged and the request goes on (a run the file refuses, e.g. a prior changed since it
was stored, gets nothing).
Without ``--store`` nothing is written anywhere. Left out: the user's system text and
earlier turns (not stored), and rotating the file.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..runner import RunPlan, open_run
from ..store import Store
from ..types import Problem, Sample
from .options import Ask
from .solver import StepRows

log = logging.getLogger("marginal.serve")


class Recorder:
    """The store writer (see the module docstring)."""

    def __init__(self, path: Path, model: str) -> None:
        self.path, self.model = path, model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="marginal-store")
        self._local = threading.local()
        self._runs: dict[str, str] = {}
        self._pool.submit(self._store).result()  # a bad path fails at start

    def _store(self) -> Store:
        s = getattr(self._local, "store", None)
        if s is None:
            s = self._local.store = Store(self.path)
        return s

    def plan(self, ask: Ask) -> RunPlan:
        policy = {"name": ask.policy_name, "budget": ask.budget, "threshold": ask.threshold}
        return RunPlan(ask.task.name, self.model, ask.spec, ask.priors, (), policy)

    def begin(self, ask: Ask, problem: Problem) -> str:
        """Register the request's problem (and its run, the first time); returns the run id."""
        plan = self.plan(ask)
        self._pool.submit(self._guard, self._begin, plan, problem)
        return plan.run_id

    def _begin(self, plan: RunPlan, problem: Problem) -> None:
        store = self._store()
        if plan.run_id not in self._runs:
            self._runs[plan.run_id] = open_run(store, plan, beside=True)
        store.add_problems(plan.run_id, [problem])

    def step(self, run_id: str, samples: list[Sample], rows: StepRows) -> None:
        """Commit one policy step; a run that could not be registered (logged) gets nothing."""

        def write() -> None:
            if run_id in self._runs:
                self._store().add_samples(run_id, samples, rows)

        self._pool.submit(self._guard, write)

    @staticmethod
    def _guard(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # a failed write must not fail the request; it is logged
            log.exception("marginal serve: writing the store failed")

    def close(self) -> None:
        def shut() -> None:
            s = getattr(self._local, "store", None)
            if s is not None:
                s.close()

        self._pool.submit(shut)
        self._pool.shutdown(wait=True)


__all__ = ["Recorder"]
