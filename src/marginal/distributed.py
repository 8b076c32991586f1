"""Multi-worker runs on Ray: the K x M grid sharded to actors, one writer.

``execute_ray`` does what `marginal.runner.execute` does, on a Ray cluster:

- The driver opens the run and lists the missing (problem, prior) groups
  exactly as ``execute`` does (so a resumed run shards only what is missing),
  and cuts them into the same batches (groups of one engine and sample
  offset, about ``batch_samples`` samples each). A batch is the shard.
- Each worker is a Ray actor holding its own task (rebuilt in the worker
  from ``task_args`` with `marginal.tasks.load_task`, not pickled) and its
  own engines (an `marginal.backends.cache.Engines` cache with
  ``backend_options``, e.g. ``n_threads=1`` per CPU worker: one engine per
  model, loaded on first use). It generates, extracts and grades a
  batch (`marginal.runner.generate_groups`) and returns its samples.
- The driver keeps one batch in flight per actor, collects finished batches
  with ``ray.wait`` as they come, and ALONE writes the store (one
  transaction per batch, as ``execute``) and reports progress.
- A worker that dies (``ray.kill``, OOM, a lost node) fails its in-flight
  batch with a ``RayActorError``; the batch goes back to the front of the
  queue and a replacement actor is started. Each batch may be retried
  ``max_retries`` times. Samples are keyed (problem, prior, index); the
  driver checks that every returned batch holds exactly the keys it asked
  for and counts (and skips) any key already stored, so a duplicate is
  reported, never written silently.
- Seeds derive from (spec seed, prompt, sample index) as in the one-process
  path, so a Ray run stores the same samples as ``execute`` up to llama.cpp's
  numerics, which depend on what each decode call holds: the other sequences
  in it and the prompt prefixes served from the engine's prefix cache (a
  worker's cache holds what that worker served before). Without the prefix
  cache and with one call per (problem, prior), the texts are identical.

`RayCluster` connects before anything touches the store: ``--address`` is
checked with a TCP connection first, because ``ray.init`` on an address with
nothing behind it retries for minutes; without an address a local cluster
with ``workers x cpus_per_worker`` CPUs is started.

Left out: policy runs (``execute_policy``, whose rounds depend on answers
seen so far, stay in one process); shipping data files or models to remote
nodes (every node must resolve the same task data and model names, e.g. a
shared filesystem or ``$MARGINAL_DATA``); a reachable address that is not a
Ray cluster (Ray itself then aborts after its GCS timeout); autoscaling.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.cache import Engines
from .errors import MarginalError
from .runner import Group, Progress, RunPlan, Tracker, generate_groups, missing_groups, open_run
from .runner import batches as runner_batches
from .store import Store
from .tasks.base import Task
from .types import Sample, SampleSpec

INSTALL = "pip install 'marginal[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise MarginalError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


@dataclass(frozen=True)
class RayReport:
    """What a Ray run did."""

    run_id: str
    workers: int
    """Actors started at first (replacements not counted)."""
    batches: int
    """Batches (shards) stored."""
    samples: int
    """New samples stored."""
    retried: int
    """Batches dispatched again because their worker died."""
    restarts: int
    """Replacement actors started."""
    duplicates: int
    """Returned samples whose key was already stored (skipped; 0 in a healthy run)."""


def _keys(groups: Sequence[Group]) -> set[tuple[str, str, int]]:
    return {(g.problem.id, g.prior.name, g.first + j) for g in groups for j in range(g.n)}


def _absolute(task_args: dict) -> dict:
    """``task_args`` with local relative paths made absolute (workers may run elsewhere)."""
    args = dict(task_args)
    name = args.get("name", "")
    if name.startswith("jsonl:") and Path(name[6:]).exists():
        args["name"] = "jsonl:" + str(Path(name[6:]).resolve())
    if args.get("data") is not None and Path(args["data"]).exists():
        args["data"] = str(Path(args["data"]).resolve())
    return args


class _Worker:
    """One Ray actor's state: a task and the engines it has loaded (lazily, in
    an `Engines` cache, so that a bad task or model fails the first batch with
    its own message)."""

    def __init__(self, task_args: dict, model: str, backend_options: dict):
        self.task_args = task_args
        self.model = model
        self.engines = Engines(**backend_options)
        self.task: Task | None = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, groups: list[Group], spec: SampleSpec) -> list[Sample]:
        from .tasks import load_task

        if self.task is None:
            args = dict(self.task_args)
            self.task = load_task(args.pop("name"), **args)
        return generate_groups(groups, spec, self.task, self.engines.backend_for(self.model))

    def close(self) -> None:
        self.engines.close()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line MarginalError unless something accepts TCP connections at ``address``."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise MarginalError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise MarginalError(
            f"--address {address}: Ray cluster unreachable ({reason}); "
            "start one with `ray start --head`, or drop --address for a local cluster"
        ) from None


class RayCluster:
    """A connection to Ray for one run: ``address`` (HOST:PORT, ray://HOST:PORT
    or auto) or, when None, a new local cluster of ``workers x cpus_per_worker``
    CPUs (all the machine's cores without ``workers``). Reuses an already
    initialized Ray (and then leaves it running)."""

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1):
        ray = _ray()
        if workers is not None and workers <= 0:
            raise MarginalError(f"--workers must be a positive integer, got {workers}")
        self.started = False
        if ray.is_initialized():
            return
        import logging

        quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
        try:
            if address is not None:
                if address != "auto":
                    _check_reachable(address)
                ray.init(address=address, **quiet)
            else:
                cpus = workers * cpus_per_worker if workers else (os.cpu_count() or 1)
                ray.init(address="local", num_cpus=max(1, math.ceil(cpus)), include_dashboard=False, **quiet)
        except MarginalError:
            raise
        except Exception as e:  # ConnectionError, version mismatch, ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            where = f"at {address}" if address else "(local)"
            raise MarginalError(f"cannot connect to the Ray cluster {where}: {first}") from None
        self.started = True

    def close(self) -> None:
        if self.started:
            _ray().shutdown()
            self.started = False

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def execute_ray(
    plan: RunPlan,
    task_args: dict,
    model: str,
    store: Store,
    *,
    workers: int | None = None,
    address: str | None = None,
    backend_options: dict | None = None,
    batch_samples: int = 64,
    on_progress: Callable[[Progress], None] | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    max_retries: int = 3,
) -> RayReport:
    """Generate every missing sample of ``plan`` into ``store`` on Ray actors.

    ``task_args`` are `marginal.tasks.load_task`'s arguments with the task's
    ``name`` (each worker rebuilds the task); ``model`` is the run's model
    (priors may name their own); ``backend_options`` go to ``load_backend``
    in each worker. ``workers`` actors (default, and at most: as many as the
    cluster's resources fit, never more than batches) each reserve
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs. Connects with
    `RayCluster` unless Ray is already initialized. A batch whose worker dies is retried up to
    ``max_retries`` times on a replacement actor; past that, or on an error
    inside a worker, the run stops with what is stored kept.
    """
    ray = _ray()
    if not isinstance(batch_samples, int) or batch_samples <= 0:
        raise MarginalError(f"--batch-samples must be a positive integer, got {batch_samples}")
    with RayCluster(address, workers, cpus_per_worker):
        run_id = open_run(store, plan)
        groups = missing_groups(store, run_id, plan)
        batches = runner_batches(groups, plan.spec, batch_samples)
        if not batches:
            return RayReport(run_id, 0, 0, 0, 0, 0, 0)
        # an actor the cluster cannot place would hold its batch forever: no more than fit
        res = ray.cluster_resources()
        fit = int(res.get("CPU", 0) // cpus_per_worker) if cpus_per_worker > 0 else len(batches)
        if gpus_per_worker > 0:
            fit = min(fit, int(res.get("GPU", 0) // gpus_per_worker))
        if fit < 1:
            raise MarginalError(
                f"the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs; a worker needs "
                f"{cpus_per_worker:g} CPUs and {gpus_per_worker:g} GPUs"
            )
        n_actors = min(workers or fit, fit, len(batches))
        fleet = _Fleet(
            n_actors, _absolute(task_args), model, dict(backend_options or {}), cpus_per_worker, gpus_per_worker
        )
        return _drive(ray, plan, run_id, store, groups, batches, fleet, on_progress, max_retries)


def _reraise_bad_input(e: Exception) -> None:
    """A worker's `MarginalError` (bad task, model or option) as the driver's own one-line error."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, MarginalError):
        raise MarginalError(str(cause)) from None


def _store_batch(
    store: Store, run_id: str, chunk: Sequence[Group], samples: list[Sample], stored: set
) -> tuple[list[Sample], int]:
    """Check that a worker returned exactly the keys of its batch, store those not stored yet
    (``stored`` is updated): the fresh samples and how many rows were added."""
    got = [(s.problem_id, s.prior, s.index) for s in samples]
    if len(got) != len(set(got)) or set(got) != _keys(chunk):
        raise RuntimeError(f"Ray worker returned samples {sorted(got)} for keys {sorted(_keys(chunk))}")
    fresh = [s for s, key in zip(samples, got) if key not in stored]
    added = store.add_samples(run_id, fresh)
    stored.update(got)
    return fresh, added


@dataclass(frozen=True)
class _Fleet:
    """The actors of one Ray run: how many, what each loads, what each reserves."""

    n_actors: int
    task_args: dict
    model: str
    backend_options: dict
    cpus_per_worker: float
    gpus_per_worker: float


def _drive(
    ray: Any,
    plan: RunPlan,
    run_id: str,
    store: Store,
    groups: list[Group],
    batches: list[tuple[list[Group], SampleSpec]],
    fleet: _Fleet,
    on_progress: Callable[[Progress], None] | None,
    max_retries: int,
) -> RayReport:
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    actor_cls = ray.remote(num_cpus=fleet.cpus_per_worker, num_gpus=fleet.gpus_per_worker, max_restarts=0)(_Worker)
    tag = f"marginal-{run_id}-{os.getpid()}-{os.urandom(3).hex()}"
    started = 0

    def new_actor():
        nonlocal started
        started += 1
        return actor_cls.options(name=f"{tag}-w{started}").remote(fleet.task_args, fleet.model, fleet.backend_options)

    track = Tracker(plan, groups, on_progress)
    stored = store.done_keys(run_id)

    actors = {k: new_actor() for k in range(fleet.n_actors)}
    idle = deque(actors)
    queue = deque(range(len(batches)))
    attempts: dict[int, int] = defaultdict(int)
    inflight: dict[Any, tuple[int, int, float]] = {}
    retried = restarts = duplicates = new = stored_batches = 0

    def dispatch() -> None:
        while queue and idle:
            k, b = idle.popleft(), queue.popleft()
            chunk, spec = batches[b]
            inflight[actors[k].run.remote(chunk, spec)] = (k, b, time.perf_counter())

    try:
        dispatch()
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            k, b, t0 = inflight.pop(ref)
            try:
                samples = ray.get(ref)
            except RayTaskError as e:
                _reraise_bad_input(e)
                raise
            except (RayActorError, WorkerCrashedError) as e:
                attempts[b] += 1
                if attempts[b] > max_retries:
                    raise MarginalError(
                        f"a batch failed on {attempts[b]} Ray workers in a row (last: {type(e).__name__}); "
                        "stored samples are kept, run the same command again to resume"
                    ) from None
                retried += 1
                restarts += 1
                ray.kill(actors[k], no_restart=True)
                actors[k] = new_actor()
                queue.appendleft(b)
                idle.append(k)
                dispatch()
                continue
            idle.append(k)
            dispatch()  # keep the worker busy while the driver writes
            chunk, _ = batches[b]
            fresh, added = _store_batch(store, run_id, chunk, samples, stored)
            duplicates += len(samples) - len(fresh)
            new += added
            stored_batches += 1
            track.stored(chunk, fresh, added, time.perf_counter() - t0)
    finally:
        for a in actors.values():
            ray.kill(a, no_restart=True)
    return RayReport(run_id, fleet.n_actors, stored_batches, new, retried, restarts, duplicates)
