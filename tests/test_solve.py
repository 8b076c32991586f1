"""marginal.solve, Session and `marginal ask` on the real bundled model."""

import subprocess
import sys
from pathlib import Path

import pytest

import marginal
from marginal.errors import MarginalError
from marginal.session import Session
from marginal.tasks import load_task
from marginal.types import SampleSpec

DEMO = Path(__file__).resolve().parents[1] / "src" / "marginal" / "data" / "demo.jsonl"
SPEC = SampleSpec(n=1, temperature=0.7, max_tokens=16, seed=0)


@pytest.fixture(scope="module")
def session(smol):
    return Session(smol, load_task(f"jsonl:{DEMO}"), spec=SPEC)


def test_solve_many_on_real_model(session):
    qs = [p for p in session.task.problems()[:3]]
    rs = session.solve_many(qs, budget=6, policy="fixed")
    for r in rs:
        assert r.used == 6 and len(r.samples) == 6
        assert {s.prior for s in r.samples} == {"default", "step-by-step", "teacher"}  # K = 3 divides 6
        valid = [s for s in r.samples if not s.failed]
        if valid:
            assert r.answer in {s.answer for s in valid}
            assert abs(sum(r.shares.values()) - 1) < 1e-9
        assert r.correct in (None, True, False)


def test_adaptive_on_real_model_respects_budget_and_reproduces(session):
    a = session.solve("What is 2 + 3?", budget=8)
    b = session.solve("What is 2 + 3?", budget=8)
    assert a.used <= 8 and a.decisions[-1].stop
    assert [s.text for s in a.samples] == [s.text for s in b.samples]


def test_a_prior_with_its_own_model_is_served_by_that_engine(smol, smol_path, monkeypatch):
    import marginal.backends as backends
    from marginal.types import Prior

    loaded, real = [], backends.load_backend
    monkeypatch.setattr(backends, "load_backend", lambda name, **kw: loaded.append(name) or real(name, **kw))
    priors = [Prior("default"), Prior("other-model", model=str(smol_path))]
    s = Session(smol, load_task(f"jsonl:{DEMO}"), priors=priors, spec=SPEC, n_threads=1)
    r = s.solve("What is 2 + 3?", budget=4, policy="fixed")  # K = 2 priors x M = 2
    other = s.backend_for(priors[1])
    assert loaded == [str(smol_path)] and other is not smol and s.backend_for(priors[0]) is smol
    assert sorted(x.prior for x in r.samples) == ["default", "default", "other-model", "other-model"]
    other.close()


def test_solve_function_and_bad_budget():
    r = marginal.solve("What is 2 + 3?", task=f"jsonl:{DEMO}", budget=2, policy="repetition", spec=SPEC)
    assert r.used == 2
    with pytest.raises(MarginalError, match="positive"):
        marginal.solve("x", task=f"jsonl:{DEMO}", budget=0, spec=SPEC)


def test_ask_cli():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "marginal",
            "ask",
            "What is 2 + 3?",
            "--task",
            f"jsonl:{DEMO}",
            "--budget",
            "4",
            "--max-tokens",
            "16",
            "--steps",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "answer:" in r.stdout and "margin" in r.stdout and "step 0: probe" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "marginal", "ask", "x", "--task", f"jsonl:{DEMO}", "--policy", "adaptve"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "did you mean 'adaptive'" in r.stderr and "Traceback" not in r.stderr
