"""`RequestSolve`: one request's policy, driven step by step over the shared engines.

Each step asks the request's `marginal.allocate.Solve` for its next groups, submits them
(rendered under their prior, `marginal.serve.prompt`) into the shared engines, awaits them
without blocking the event loop, extracts and grades their answers in a worker thread, feeds
them back and yields a progress object (leader, margin, samples used, P(leader stays)). When
the policy stops, ``result`` is the session's `marginal.session.Result` and ``summary()`` the
response's ``marginal`` object. A task that is cancelled (a client that went away) cancels
its outstanding samples, which leave the engine at its next step; ``cancelled`` counts them.
Upstream failures become `APIError`: unreachable 503, a prompt over its context 400, any
other 502, and a request whose every sample failed 502. Left out: sharing samples between
requests for the same question.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from ..allocate import Solve, decision_row
from ..errors import MarginalError
from ..policies import Decision
from ..runner import to_samples
from ..session import Result, result_of
from ..types import Problem, Sample
from ..vote import label_free_margin, tally, winner
from .engines import EngineHub
from .errors import APIError
from .options import Ask
from .prompt import Conversation

StepRows = list[tuple[str, int, str, str, str]]
"""Store rows of decisions: (problem id, samples used, requests JSON, reason, detail JSON)."""


def upstream_error(e: MarginalError) -> APIError:
    msg = str(e)
    if isinstance(e, APIError):
        return e
    if "unreachable" in msg:
        return APIError(503, msg, code="upstream_unreachable")
    if "does not fit the context" in msg:
        return APIError(400, msg, param="messages", code="context_length_exceeded")
    return APIError(502, msg, code="upstream_error")


class RequestSolve:
    """One request's solve (see the module docstring)."""

    def __init__(
        self,
        hub: EngineHub,
        ask: Ask,
        conversation: Conversation,
        problem: Problem,
        *,
        on_step: Callable[[list[Sample], StepRows], None] | None = None,
    ) -> None:
        self.hub, self.ask, self.conversation, self.problem = hub, ask, conversation, problem
        self.solve = Solve(problem, ask.priors, ask.policy, ask.budget)
        self.on_step = on_step
        self.steps_used: list[int] = []
        self.cancelled = 0
        self.result: Result | None = None
        self.finished = False
        """The server has counted it and released its place in the queue."""
        self.t0 = time.perf_counter()

    def check(self) -> None:
        """A 400 before anything is sampled when a prior's prompt does not fit the context."""
        for prior in self.ask.priors:
            self.hub.check_fits(prior, self.conversation.render(prior))

    def _decided(self, d: Decision) -> StepRows:
        self.steps_used.append(self.solve.used)
        return [decision_row(self.problem.id, self.solve.used, d)]

    async def run(self) -> AsyncIterator[dict[str, Any]]:
        """Yield a progress object after each sampling step; ``result`` is set at the end."""
        sv, ask = self.solve, self.ask
        while True:
            try:
                groups = sv.next()
            except MarginalError as e:
                raise APIError(400, str(e), param="marginal.policy") from None
            rows = self._decided(sv.state.decisions[-1])
            if groups is None:
                if self.on_step:
                    self.on_step([], rows)
                break
            t0 = time.perf_counter()
            futures = [
                self.hub.submit(
                    g.prior, self.conversation.render(g.prior), replace(ask.spec, n=g.n, first_index=g.first)
                )
                for g in groups
            ]
            try:
                comps = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            except BaseException as e:
                for f in futures:
                    f.cancel()
                self.cancelled += sum(g.n for g, f in zip(groups, futures) if f.cancelled())
                if isinstance(e, MarginalError):
                    raise upstream_error(e) from None
                raise
            samples = await asyncio.to_thread(to_samples, ask.task, groups, comps, time.perf_counter() - t0)
            per, at = [], 0
            for g in groups:
                per.append(samples[at : at + g.n])
                at += g.n
            sv.feed(per)
            if self.on_step:
                self.on_step(samples, rows)
            yield self.progress()
        self.result = result_of(ask.task, self.problem, sv.state, ask.budget)
        if self.result.samples and all(s.finish_reason == "error" for s in self.result.samples):
            raise APIError(502, f"the model failed every sample: {self.result.samples[-1].error}", code="model_error")

    def progress(self) -> dict[str, Any]:
        st = self.solve.state
        counts = tally(st.answers)
        last = st.decisions[-1]
        return {
            "leader": winner(counts),
            "margin": label_free_margin(counts),
            "used": self.solve.used,
            "budget": self.ask.budget,
            "p_leader_stays": last.p_leader_stays,
            "step": len(st.decisions),
            "decision": last.kind,
            "reason": last.reason,
        }

    def best_sample(self) -> Sample:
        """The sample shown as the answer: of the winning answer, the highest mean log-prob
        (of all samples when none has an answer; a failed one only when all failed)."""
        assert self.result is not None
        r = self.result
        pool = [s for s in r.samples if s.answer is not None and s.answer == r.answer]
        pool = pool or [s for s in r.samples if s.finish_reason != "error"] or list(r.samples)
        return max(pool, key=lambda s: (s.logprob / max(1, s.completion_tokens), -r.samples.index(s)))

    def usage(self) -> dict[str, Any]:
        samples = self.result.samples if self.result else self.solve.state.samples
        p = sum(s.prompt_tokens for s in samples)
        c = sum(s.completion_tokens for s in samples)
        cached = sum(s.cached_prompt_tokens for s in samples)
        return {
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def summary(self) -> dict[str, Any]:
        """The response's ``marginal`` object."""
        assert self.result is not None
        r, ask = self.result, self.ask
        names = [p.name for p in ask.priors]
        per_prior: dict[str, Any] = {}
        for s in r.samples:
            e = per_prior.setdefault(s.prior, {"samples": 0, "failed": 0, "votes": {}})
            e["samples"] += 1
            if s.answer is None:
                e["failed"] += 1
            else:
                e["votes"][s.answer] = e["votes"].get(s.answer, 0) + 1
        decisions = [
            {
                "used": used,
                "kind": d.kind,
                "requests": [{"prior": names[i], "samples": n} for i, n in d.requests],
                "reason": d.reason,
                "regime": d.regime,
                "p_leader_stays": d.p_leader_stays,
                "stop_kind": d.stop_kind,
            }
            for used, d in zip(self.steps_used, r.decisions)
        ]
        return {
            "answer": r.answer,
            "margin": r.margin,
            "shares": r.shares,
            "used": r.used,
            "budget": r.budget,
            "saved": r.budget - r.used,
            "stop_reason": r.stop_reason,
            "stop_kind": r.decisions[-1].stop_kind,
            "regime": r.regime,
            "policy": ask.policy_name,
            "task": ask.task.name,
            "priors": per_prior,
            "decisions": decisions,
            "samples": [
                {
                    "prior": s.prior,
                    "index": s.index,
                    "answer": s.answer,
                    "error": s.error,
                    "finish_reason": s.finish_reason,
                    "seed": s.seed,
                    "completion_tokens": s.completion_tokens,
                    "logprob": s.logprob,
                }
                for s in r.samples
            ],
            "seconds": time.perf_counter() - self.t0,
        }


__all__ = ["RequestSolve", "StepRows", "upstream_error"]
