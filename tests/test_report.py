"""`marginal analyze` and `marginal report` on Store-built pools (no model needed)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marginal.analysis import analyze, load_pool
from marginal.errors import MarginalError
from marginal.report import render_html, write_report
from marginal.store import Store
from marginal.types import Prior, Problem, Sample

ROOT = Path(__file__).resolve().parents[1]


def marginal(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "160"
    code = "import sys; from marginal.cli import main; sys.argv[0] = 'marginal'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)


def build_run(path: Path, *, labelled: bool = True, n_problems: int = 30, seed: int = 0) -> Path:
    """A pool shaped like a real run: 4 priors x 6 samples, some failures, per-prior skill."""
    rng = np.random.default_rng(seed)
    st = Store(path)
    priors = [
        Prior("default"),
        Prior("step-by-step", template="Think step by step. {question}"),
        Prior("terse", template="Answer only. {question}"),
        Prior("teacher", system="You are a teacher."),
    ]
    skill = [0.55, 0.65, 0.35, 0.5]
    problems = [Problem(f"q{i}", f"what is {i}+{i}?", str(2 * i) if labelled else None) for i in range(n_problems)]
    st.create_run("run1", {"seed": seed}, problems, priors, "test")
    samples = []
    for i, pr in enumerate(problems):
        hard = rng.random() < 0.3
        for c, p in enumerate(priors):
            for j in range(6):
                u = rng.random()
                if u < 0.05:
                    ans, cor = None, None
                elif rng.random() < (0.1 if hard else skill[c]):
                    ans, cor = str(2 * i), True
                else:
                    ans, cor = str(2 * i + int(rng.integers(1, 4))), False
                samples.append(
                    Sample(
                        pr.id,
                        p.name,
                        j,
                        text=f"so {ans}",
                        answer=ans,
                        correct=(cor if labelled and ans is not None else None),
                        error=None if ans else "no number",
                    )
                )
    st.add_samples("run1", samples)
    st.close()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return build_run(d / "a.db"), build_run(d / "b.db", seed=1), build_run(d / "lf.db", labelled=False, seed=2)


def test_analyze_cli_tables_and_json(runs, tmp_path):
    out = tmp_path / "a.json"
    r = marginal("analyze", runs[0], "--budget", "12", "--split", "0.5", "--seed", "3", "--json", out)
    assert r.returncode == 0, r.stderr
    for text in (
        "Vote accuracy",
        "regime:",
        "Planner for B = 12",
        "repetition-only",
        "diversity-only",
        "dominance",
        "Weighted votes",
        "By difficulty",
    ):
        assert text in r.stdout, text
    d = json.loads(out.read_text())
    assert d["budget"] == 12 and d["problems"] == 30 and not d["label_free"]
    cells = [tuple(c) for c in d["grid"]["cells"]]
    assert all(k * m <= 12 for k, m in cells) and (4, 3) in cells and (1, 6) in cells
    assert d["drift"]["regime"] in ("aligned", "misaligned", "saturating")
    lo, hi = d["drift"]["lambda_ci"]
    assert lo <= d["drift"]["lambda"] <= hi
    # the JSON grid is the library's grid
    pool = load_pool(runs[0])
    a = analyze(pool, 12, seed=3)
    np.testing.assert_allclose(d["grid"]["accuracy"], np.round(a.grid.mean, 6))
    assert tuple(d["plan"]["choice"]) == a.plan.choice


def test_analyze_cli_errors(runs, tmp_path):
    r = marginal("analyze", runs[0], "--budget", "25")
    assert r.returncode == 2 and "largest valid budget is 24" in r.stderr and "Traceback" not in r.stderr
    r = marginal("analyze", tmp_path / "missing.db")
    assert r.returncode == 2 and "no such run database" in r.stderr
    empty = tmp_path / "empty.db"
    Store(empty).close()
    r = marginal("analyze", empty)
    assert r.returncode == 2 and "no run" in r.stderr
    r = marginal("analyze", runs[0], "--split", "1.5")
    assert r.returncode == 2 and "--split" in r.stderr
    r = marginal("analyze", runs[0], "--run", "runx")
    assert r.returncode == 2 and "unknown run" in r.stderr


def test_analyze_cli_label_free(runs):
    r = marginal("analyze", runs[2])
    assert r.returncode == 0, r.stderr
    assert "only label-free measures" in r.stdout and "label-free margin" in r.stdout
    assert "Vote accuracy" not in r.stdout


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_report_cli_side_by_side(runs, tmp_path):
    out = tmp_path / "rep" / "report.html"
    r = marginal("report", runs[0], runs[1], runs[2], "--html", out, "--budget", "12")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "<html" in text and "http://" not in text and "https://" not in text  # self-contained
    imgs = _images(text)
    # 2 labelled runs x 7 plots + label-free run x 3 plots
    assert len(imgs) == 2 * 7 + 3
    assert all(b.startswith(b"\x89PNG") and len(b) > 2000 for b in imgs)
    for s in ("Accuracy vs budget", "Planner", "regime", "label-free run", "a.db", "b.db", "lf.db"):
        assert s in text, s


def test_report_errors(runs, tmp_path):
    a = analyze(load_pool(runs[0]), 8)
    with pytest.raises(MarginalError, match="html"):
        write_report([a], tmp_path / "r.png")
    with pytest.raises(MarginalError, match="at least one run"):
        render_html([])
    r = marginal("report", runs[0], "--html", tmp_path / "x.html", "--budget", "99")
    assert r.returncode == 2 and "largest valid budget is 24" in r.stderr


def test_report_with_fewer_than_two_labelled_problems(tmp_path):
    a = analyze(load_pool(build_run(tmp_path / "one.db", n_problems=1)), 8)
    assert a.plan is None and not a.label_free
    text = render_html([a])
    assert "too few labelled problems for a calibration/test split" in text
    r = marginal("report", tmp_path / "one.db", "--html", tmp_path / "one.html")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="Chromium not installed (apt-get install chromium); scripts/check_report.py needs it",
)
def test_report_renders_in_chromium(tmp_path):
    png = tmp_path / "shot.png"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_report.py"), "--out", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
