"""The incremental form of a backend: requests join a running engine and leave it as they finish.

A `Streaming` backend takes one request at a time, ``submit(prompt, spec) ->
Future[list[Completion]]`` (the future resolves with the prompt's ``spec.n``
completions once the last of them is done), and makes progress in
``step()``: llama.cpp decodes one token for every active sequence (plus
chunks of newly admitted prompts); an engine that runs on its own threads
(an HTTP client, vLLM's engine loop) waits there until some request
finishes. Submission is thread-safe, and a caller cancels a request with
``future.cancel()``: its sequences leave the engine at the next step.

``generate(prompts, spec)`` stays the one blocking call of the `Backend`
protocol: submit every prompt, then ``drain`` until all are back.

- `Barrier` wraps any `Backend` (transformers, a test fake) as a
  `Streaming` one: each ``step()`` generates everything submitted so far in
  one ``generate`` call per sampling spec (barrier batching, as before).
- `streaming(backend)` returns the backend itself when it streams, else a
  `Barrier` around it.
- `Driver` steps several engines round-robin from one thread until a set of
  futures is done, calling back as each finishes; a callback may submit more
  (the next request of a policy). Nothing in it depends on timing, so a run
  driven by it makes the same engine calls every time; an engine with a
  ``begin_run()`` method (llama.cpp: empty the prefix cache when idle) is
  told when a run starts using it, so that a run is reproducible whatever
  ran on the engine before.

Left out: priorities between requests (admission is first come, first
served) and per-token streaming of text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar, runtime_checkable

from ..types import Completion, Prompt, SampleSpec
from .base import Backend

Request = Future  # a submitted prompt: resolves to its list[Completion]


@runtime_checkable
class Streaming(Protocol):
    """A backend that takes requests while it runs (see the module docstring)."""

    name: str

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]: ...

    def step(self) -> bool:
        """Make progress on the submitted requests; False when there was nothing to do."""
        ...

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]: ...

    def close(self) -> None: ...


STOP = threading.Event()
"""A stop request (the CLI sets it on SIGTERM): `drain` and `Driver.run` raise KeyboardInterrupt
at their next step, as on Ctrl-C, so finished samples are still committed. A signal handler's own
exception can be lost (Python drops exceptions raised inside a ctypes callback such as llama.cpp's
log hook); this flag is not."""


def _check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt


def drain(engine: Streaming, futures: Sequence[Future]) -> list[list[Completion]]:
    """Step ``engine`` until every future is done; their results in order."""
    while not all(f.done() for f in futures):
        _check_stop()
        if not engine.step() and not all(f.done() for f in futures):
            raise RuntimeError(f"engine {engine.name} went idle with requests outstanding")
    return [f.result() for f in futures]


class Barrier:
    """A `Streaming` view of a blocking `Backend`: each step generates all that is pending.

    Pending requests are grouped by their sampling spec (``n``, ``first_index``
    and the rest) and each group is one ``generate`` call of at most
    ``max_batch`` samples, in submission order.
    """

    def __init__(self, backend: Backend, max_batch: int = 256) -> None:
        self.backend = backend
        self.name = backend.name
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[Prompt, SampleSpec, Future]] = []

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        fut: Future[list[Completion]] = Future()
        with self._lock:
            self._pending.append((prompt, spec, fut))
        return fut

    def step(self) -> bool:
        with self._lock:
            todo = [p for p in self._pending if not p[2].cancelled()]
            self._pending.clear()
        if not todo:
            return False
        groups: dict[SampleSpec, list[tuple[Prompt, Future]]] = {}
        for prompt, spec, fut in todo:
            groups.setdefault(spec, []).append((prompt, fut))
        for spec, items in groups.items():
            per_call = max(1, self.max_batch // spec.n)
            for a in range(0, len(items), per_call):
                chunk = items[a : a + per_call]
                outs = self.backend.generate([p for p, _ in chunk], spec)
                for (_, fut), out in zip(chunk, outs):
                    if not fut.cancelled():
                        fut.set_result(out)
        return True

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        return self.backend.generate(prompts, spec)

    def close(self) -> None:
        self.backend.close()


def streaming(backend: Backend) -> Streaming:
    """``backend`` itself when it streams, else a `Barrier` around it."""
    return backend if isinstance(backend, Streaming) else Barrier(backend)


Tag = TypeVar("Tag")
"""What a `Driver`'s caller attaches to each request (handed back to ``on_done``)."""


class Driver(Generic[Tag]):
    """Steps engines until their requests are done, calling ``on_done`` as each finishes.

    ``submit(engine, prompt, spec, tag)`` sends a request; ``run()`` steps
    every engine with outstanding requests in turn (one ``step`` each per
    round) and calls ``on_done(tag, completions)`` for each finished request
    in submission order, until none is left. ``on_done`` may submit more.
    """

    def __init__(self, on_done: Callable[[Tag, list[Completion]], None]) -> None:
        self.on_done = on_done
        self._engines: dict[int, Streaming] = {}
        self._out: dict[int, list[tuple[Future, Tag]]] = {}

    def submit(self, engine: Streaming, prompt: Prompt, spec: SampleSpec, tag: Tag) -> Future:
        if id(engine) not in self._engines:
            begin = getattr(engine, "begin_run", None)  # an idle engine starts the run afresh
            if begin is not None:
                begin()
            self._engines[id(engine)] = engine
        fut = engine.submit(prompt, spec)
        self._out.setdefault(id(engine), []).append((fut, tag))
        return fut

    @property
    def outstanding(self) -> int:
        return sum(len(v) for v in self._out.values())

    def run(self) -> None:
        while self.outstanding:
            _check_stop()
            for key in [k for k, v in self._out.items() if v]:
                engine = self._engines[key]
                progressed = engine.step()
                done = [(f, t) for f, t in self._out[key] if f.done()]
                if not done and not progressed:
                    raise RuntimeError(f"engine {engine.name} went idle with requests outstanding")
                self._out[key] = [(f, t) for f, t in self._out[key] if not f.done()]
                for f, t in done:
                    if not f.cancelled():
                        self.on_done(t, f.result())

    def cancel(self, tags: Iterable[Tag]) -> int:
        """Cancel the outstanding requests with these tags; how many were cancelled."""
        wanted = set(map(id, tags))
        n = 0
        for items in self._out.values():
            for f, t in items:
                if id(t) in wanted and f.cancel():
                    n += 1
        return n


class Pump:
    """A background thread that steps one engine while it has work (for servers).

    ``submit`` forwards to the engine and wakes the thread; callers wait on
    the returned futures (``asyncio.wrap_future`` in an event loop). All
    concurrent callers' requests share the engine's batches. ``close()``
    stops the thread (the engine stays open).
    """

    def __init__(self, engine: Streaming, idle_wait: float = 0.05) -> None:
        self.engine = engine
        self.idle_wait = idle_wait
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"pump-{engine.name}", daemon=True)
        self._thread.start()

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        if self.error is not None:
            raise RuntimeError(f"engine {self.engine.name} stopped: {self.error}") from self.error
        fut = self.engine.submit(prompt, spec)
        self._wake.set()
        return fut

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.engine.step()
            except BaseException as e:  # the engine broke: fail loudly to every later caller
                self.error = e
                return
            if not busy:
                self._wake.wait(self.idle_wait)
                self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
