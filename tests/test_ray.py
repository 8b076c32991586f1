"""`marginal run --ray` on a local Ray cluster with 2 workers and the real bundled model:
the same rows as the one-process runner, a killed worker's batch retried
without duplicates, resume of a partial store, bad addresses and options.

llama.cpp's numerics depend on what a decode call holds: which prompts and
sequences share it, and which prompt prefixes come from the engine's prefix
cache (whose contents depend on what the worker served before). The in-process
tests therefore run without the prefix cache and compare the texts with a
reference that makes one call per (problem, prior), as each worker does; the
CLI runs (default engine options) are compared on everything but the texts:
keys, seeds, and one stored row per sample."""

import hashlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from marginal.backends import slot_options
from marginal.distributed import RayCluster, execute_ray
from marginal.errors import MarginalError  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src" / "marginal" / "data" / "demo.jsonl"
TASK = f"jsonl:{DEMO}"
SMALL = ["--limit", "3", "--priors", "2", "--samples", "2", "--max-tokens", "16", "--batch-samples", "2"]
"""3 problems x 2 priors x 2 samples in 6 batches of one (problem, prior) each."""
TASK_ARGS = {"name": TASK}
OPTIONS = slot_options(32, 16, prefix_cache=0, threads=1)
"""The engine options of `marginal run` for SMALL (--slots 32 at --max-tokens 16), without the prefix cache."""


def marginal(*args, **kw):
    return subprocess.run([sys.executable, "-m", "marginal", *map(str, args)], capture_output=True, text=True, **kw)


def keys(db):
    """Everything of a stored sample that the engine's numerics cannot change."""
    return [r[:4] for r in rows(db)]


def rows(db):
    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT problem_id, prior, idx, seed, text, answer, correct, error, completion_tokens "
            "FROM samples ORDER BY 1, 2, 3"
        ).fetchall()


def plan():
    from marginal.config import ProblemSelection, RunConfig, TaskSource, build_plan
    from marginal.types import SampleSpec

    _, p = build_plan(
        RunConfig(
            TaskSource(TASK),
            model="smollm2-135m",
            priors="2",
            samples=2,
            sampling=SampleSpec(max_tokens=16, seed=0),
            problems=ProblemSelection(limit=3),
        )
    )
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory, smol_path):
    """The one-process runner's rows for the same plan, one engine call per (problem, prior) as a Ray worker
    makes them (`Barrier` around the engine): what every Ray run with ``OPTIONS`` must store."""
    from marginal.backends.llamacpp import LlamaCppBackend
    from marginal.backends.streaming import Barrier
    from marginal.runner import execute
    from marginal.store import Store
    from marginal.tasks import load_task

    db = tmp_path_factory.mktemp("ref") / "ref.db"
    store = Store(db)
    smol = LlamaCppBackend(smol_path, name="smollm2-135m", **OPTIONS)
    try:
        one_call_each = Barrier(smol, max_batch=2)
        execute(plan(), load_task(TASK), lambda prior: one_call_each, store, batch_samples=2)
    finally:
        smol.close()
        store.close()
    got = rows(db)
    assert len(got) == 3 * 2 * 2 and len({r[3] for r in got}) == 12
    return db


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster for the in-process tests, shut down at the end of the module."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_cli_ray_two_workers_stores_the_one_process_rows(reference, tmp_path):
    db = tmp_path / "ray.db"
    r = marginal("run", TASK, *SMALL, "--ray", "--workers", "2", "--out", db, timeout=300)
    assert r.returncode == 0, r.stderr
    assert keys(db) == keys(reference)
    assert "12 samples" in r.stdout


def test_killed_workers_batches_are_retried_without_duplicates(reference, cluster, tmp_path):
    from marginal.store import Store

    store = Store(tmp_path / "killed.db")
    killed = []

    def kill_all_workers(progress):
        if not killed:  # after the first batch: both workers hold a batch in flight
            for name in ray.util.list_named_actors():
                if name.startswith("marginal-"):
                    ray.kill(ray.get_actor(name))
                    killed.append(name)

    report = execute_ray(
        plan(),
        TASK_ARGS,
        "smollm2-135m",
        store,
        workers=2,
        backend_options=OPTIONS,
        batch_samples=2,
        on_progress=kill_all_workers,
    )
    assert len(killed) == 2
    assert report.retried >= 1 and report.restarts >= 1
    assert report.duplicates == 0
    assert report.samples == 12 and report.batches == 6
    store.close()
    assert rows(tmp_path / "killed.db") == rows(reference)
    assert not [n for n in ray.util.list_named_actors() if n.startswith("marginal-")]  # workers are gone


def test_resume_shards_only_the_missing_samples(reference, cluster, tmp_path):
    from marginal.store import Store

    db = tmp_path / "partial.db"
    shutil.copy(reference, db)
    with sqlite3.connect(db) as c:  # a run killed part way: one problem and one (problem, prior) missing
        c.execute("DELETE FROM samples WHERE problem_id='demo/1' OR (problem_id='demo/2' AND prior='default')")
        kept = c.execute("SELECT problem_id, prior, idx, created FROM samples ORDER BY 1, 2, 3").fetchall()
    assert len(kept) == 12 - 4 - 2
    seen = []
    store = Store(db)
    report = execute_ray(
        plan(),
        TASK_ARGS,
        "smollm2-135m",
        store,
        workers=2,
        backend_options=OPTIONS,
        batch_samples=2,
        on_progress=seen.append,
    )
    store.close()
    assert report.samples == 6 and report.batches == 3 and report.duplicates == 0 and report.retried == 0
    assert sum(p.new_samples for p in seen) == 6 and seen[-1].samples_done == 12 and seen[-1].problems_done == 3
    assert rows(db) == rows(reference)
    with sqlite3.connect(db) as c:
        after = c.execute("SELECT problem_id, prior, idx, created FROM samples ORDER BY 1, 2, 3").fetchall()
    assert set(kept) <= set(after)  # stored samples untouched

    again = Store(db)  # nothing missing: no actor, no batch
    assert execute_ray(plan(), TASK_ARGS, "smollm2-135m", again, workers=2).batches == 0
    again.close()


def test_cli_worker_killed_from_outside(reference, cluster, tmp_path):
    """`marginal run --ray --address` on a running cluster, with `ray.kill` from another
    process while it has batches in flight."""
    db = tmp_path / "outside.db"
    args = [
        sys.executable,
        "-m",
        "marginal",
        "run",
        TASK,
        *SMALL,
        "--ray",
        "--address",
        cluster,
        "--threads",
        "1",
        "--out",
        str(db),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        victim = None
        while victim is None and proc.poll() is None and time.time() < deadline:
            named = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("marginal-")]
            if named:
                victim = named[0]
                ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]))
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert victim is not None, "no worker seen"
    assert proc.returncode == 0, stderr
    assert "batches retried after workers died, 0 duplicate" in " ".join(stdout.split())
    assert keys(db) == keys(reference)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_is_one_line_and_leaves_the_store(reference, tmp_path):
    db = tmp_path / "kept.db"
    shutil.copy(reference, db)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    r = marginal("run", TASK, *SMALL, "--ray", "--address", f"127.0.0.1:{_free_port()}", "--out", db, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "Traceback" not in r.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    r = marginal("run", TASK, *SMALL, "--ray", "--address", "nohost", "--out", tmp_path / "new.db", timeout=60)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr and not (tmp_path / "new.db").exists()


def test_bad_ray_options(tmp_path):
    r = marginal("run", TASK, *SMALL, "--workers", "2", "--out", tmp_path / "x.db")
    assert r.returncode == 2 and "--ray" in r.stderr
    r = marginal("run", TASK, "--budget", "4", "--policy", "adaptive", "--ray", "--out", tmp_path / "x.db")
    assert r.returncode == 2 and "--policy" in r.stderr
    r = marginal("run", TASK, *SMALL, "--ray", "--workers", "0", "--out", tmp_path / "x.db")
    assert r.returncode == 2 and "--workers" in r.stderr
    assert not (tmp_path / "x.db").exists()


def test_without_ray_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MarginalError, match=r"pip install 'marginal\[ray\]'"):
        RayCluster()
