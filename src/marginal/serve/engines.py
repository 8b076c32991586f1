"""`EngineHub`: the server's engines, each stepped by one `Pump` thread that every request shares.

The server's model, and any model a prior names (``Prior.model``), is loaded once through
the `marginal.backends.cache.Engines` cache with the server's options (llama.cpp: ``slots``
sequences of ``max_tokens`` plus prompt room). Each engine is seen as `Streaming` (a
blocking one through a `Barrier`) and driven by a `Pump`: every request's solve submits its
groups into the one running engine, so concurrent requests decode in the same batches
(continuous batching on llama.cpp; one ``generate`` per step of whatever is pending on a
blocking engine), off the event loop. A cancelled future leaves the engine at its next step.

``check_fits`` refuses a prompt the engine cannot hold before any sample is asked for, where
the engine can tell (llama.cpp: its tokenizer and tokens per sequence); an upstream server
says so itself (a 400 from it becomes a 400 here). Left out: evicting engines and several
replicas of one model.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from ..backends.base import Backend
from ..backends.cache import Engines
from ..backends.streaming import Pump, streaming
from ..types import Completion, Prior, Prompt, SampleSpec
from .errors import APIError


class EngineHub:
    """The loaded engines and their pumps (see the module docstring)."""

    def __init__(self, model: str | Backend, **options: Any) -> None:
        self._engines = Engines(**options)
        self.backend = self._engines.get(model) if isinstance(model, str) else self._engines.add(model.name, model)
        self.name = self.backend.name
        self._pumps: dict[int, Pump] = {}
        self._lock = threading.Lock()
        self.pump(None)  # the server's own engine starts now

    def backend_for(self, prior: Prior | None) -> Backend:
        if prior is None or prior.model is None:
            return self.backend
        with self._lock:
            return self._engines.get(prior.model)

    def pump(self, prior: Prior | None) -> Pump:
        b = self.backend_for(prior)
        with self._lock:
            p = self._pumps.get(id(b))
            if p is None:
                p = self._pumps[id(b)] = Pump(streaming(b))
            return p

    def submit(self, prior: Prior, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        pump = self.pump(prior)
        try:
            return pump.submit(prompt, spec)
        except RuntimeError as e:
            raise APIError(503, str(e), code="engine_stopped") from None

    def check_fits(self, prior: Prior, prompt: Prompt) -> None:
        """A 400 when ``prompt`` leaves no room to generate in the engine's context."""
        b = self.backend_for(prior)
        tokenize, limit = getattr(b, "tokenize", None), getattr(b, "seq_ctx", None)
        if tokenize is None or not isinstance(limit, int):
            return
        n = len(tokenize(prompt))
        if n + 1 > limit:
            raise APIError(
                400,
                f"the prompt has {n} tokens under prior {prior.name!r}; the model's context holds {limit} "
                "per sequence with room to generate; shorten the messages",
                param="messages",
                code="context_length_exceeded",
            )

    @property
    def error(self) -> BaseException | None:
        """Why an engine's pump stopped, if one did."""
        return next((p.error for p in self._pumps.values() if p.error is not None), None)

    @property
    def busy(self) -> bool | None:
        """Whether the server's engine has requests running (None when it cannot tell)."""
        engine = getattr(self.backend, "engine", None)
        b = getattr(engine, "busy", None)
        return b if isinstance(b, bool) else None

    def close(self) -> None:
        for p in self._pumps.values():
            p.close()
        self._engines.close()


__all__ = ["EngineHub"]
