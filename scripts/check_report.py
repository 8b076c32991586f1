"""Build a `marginal report` and screenshot it with headless Chromium (Debian's `chromium`).

Usage: python scripts/check_report.py [RUN.db ...] [--out shot.png] [--html report.html]
       [--width 1400] [--height 4200]

Without run databases it builds two small synthetic runs (4 priors x 6
samples, one labelled, one label-free) through the Store API, so it needs no
model. Exits non-zero when Chromium is missing, fails, or writes no image.
Left out: pixel-level comparison with a reference image (look at the PNG).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from marginal.analysis import analyze, load_pool
from marginal.report import write_report
from marginal.store import Store
from marginal.types import Prior, Problem, Sample


def demo_run(path: Path, *, labelled: bool, seed: int, n_problems: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    st = Store(path)
    priors = [
        Prior("default"),
        Prior("step-by-step", template="Think step by step. {question}"),
        Prior("terse", template="Answer only. {question}"),
        Prior("teacher", system="You are a teacher."),
    ]
    skill = [0.55, 0.65, 0.35, 0.5]
    problems = [Problem(f"q{i}", f"q{i}", str(i) if labelled else None) for i in range(n_problems)]
    st.create_run(f"demo{seed}", {"seed": seed}, problems, priors, "check")
    samples = []
    for i, pr in enumerate(problems):
        hard = rng.random() < 0.3
        for c, p in enumerate(priors):
            for j in range(6):
                if rng.random() < 0.05:
                    ans, cor = None, None
                elif rng.random() < (0.1 if hard else skill[c]):
                    ans, cor = str(i), True
                else:
                    ans, cor = str(i + int(rng.integers(1, 4))), False
                samples.append(
                    Sample(
                        pr.id,
                        p.name,
                        j,
                        text="",
                        answer=ans,
                        correct=cor if labelled else None,
                        error=None if ans else "none",
                    )
                )
    st.add_samples(f"demo{seed}", samples)
    st.close()
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dbs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=Path("report.png"))
    ap.add_argument("--html", type=Path, default=None)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=4200)
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        dbs = args.dbs or [
            demo_run(t / "labelled.db", labelled=True, seed=0),
            demo_run(t / "label_free.db", labelled=False, seed=1),
        ]
        analyses = [analyze(load_pool(db)) for db in dbs]
        html = args.html or t / "report.html"
        write_report(analyses, html, names=[d.name for d in dbs])
        out = args.out.resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={t / 'profile'}",
            f"--window-size={args.width},{args.height}",
            f"--screenshot={out}",
            html.resolve().as_uri(),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if r.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            print(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}", file=sys.stderr)
            return 1
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB) from {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
