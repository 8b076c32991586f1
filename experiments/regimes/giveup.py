"""A stop rule for hopeless questions, tried on pool A (issue 12, section 3): before and after, same problems.

    python experiments/regimes/giveup.py [POOL.db]      # after grow.sh; writes giveup.json

Adaptive spends 61-93% of the budget on the 0.5B because its answers scatter
and the leader is rarely certain. The rule tried here adds one stop to
``Adaptive``: once at least ``n_min`` samples are drawn, stop when the
leader holds at most ``share`` of the valid votes (the model cannot settle
the question). Its decisions are adaptive's until it stops, so it draws a
prefix of adaptive's samples and the pool grown for adaptive serves it
exactly. In the calibrated order (priors by accuracy on the calibration
half), every (n_min, share) of a small grid is replayed at B = 32; the
setting is chosen on the calibration half (fewest samples among those
within 1 point of plain adaptive there) and scored on the held-out half,
paired against plain adaptive with a bootstrap CI over problems. Left out:
landing the rule in ``marginal.policies`` (it is not, see the README).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginal.policies import Adaptive, Answers, Decision, used
from marginal.replay import replay
from marginal.snapshot import snapshot
from marginal.vote import tally, winner

sys.path.insert(0, str(Path(__file__).parent))
from adaptive import HERE, calibrated_order, ci, complete, split_problems  # noqa: E402

B = 32
N_MIN = (4, 6, 8, 10, 12, 16)
SHARES = (0.2, 0.26, 0.34, 0.4)


@dataclass(frozen=True)
class GiveUp:
    """``inner``, plus: stop once ``n_min`` samples are drawn and the leader holds <= ``share`` of the votes."""

    inner: Adaptive
    n_min: int
    share: float
    name: str = "adaptive+give-up"

    def decide(self, answers: Answers, budget: int) -> Decision:
        c = tally(answers)
        if used(answers) >= self.n_min and (not c or c[winner(c)] / sum(c.values()) <= self.share):
            return Decision((), "hopeless: no answer holds the votes", stop_kind="leader certain")
        return self.inner.decide(answers, budget)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    db = argv[0] if argv else str(HERE / "pools" / "gsm8k-qwen05.db")
    out: dict = {"pool": Path(db).name, "budget": B, "thresholds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        snap = snapshot(db, Path(tmp) / "pool.db")
        pool = complete(snap)
        halves = dict(zip(("cal", "test"), split_problems(pool.n_problems, 0.5, 0)))
        order = calibrated_order(pool.subset(halves["cal"]))
        idx = np.random.default_rng(0).integers(0, len(halves["test"]), size=(4000, len(halves["test"])))

        def run(policy) -> dict[str, np.ndarray]:
            r = replay(snap, policy, B, priors=order)
            assert not any(r.ran_out), "grow the pool for adaptive first (grow.sh)"
            by = dict(zip(r.problems, zip(r.credit, r.used)))
            return {h: np.array([by[pool.problems[i]] for i in rows]) for h, rows in halves.items()}

        for tau in (0.8, 0.95):
            base = run(Adaptive(threshold=tau))
            grid = {(n, s): run(GiveUp(Adaptive(threshold=tau), n, s)) for n, s in itertools.product(N_MIN, SHARES)}
            ok = [k for k, r in grid.items() if r["cal"][:, 0].mean() >= base["cal"][:, 0].mean() - 0.01]
            chosen = min(ok, key=lambda k: grid[k]["cal"][:, 1].mean()) if ok else None
            rows = {
                f"{n}:{s}": {h: [float(r[h][:, 0].mean() - base[h][:, 0].mean()), float(r[h][:, 1].mean())] for h in r}
                for (n, s), r in grid.items()
            }
            entry = {
                "adaptive": {h: [float(base[h][:, 0].mean()), float(base[h][:, 1].mean())] for h in base},
                "give_up": rows,
                "chosen_on_cal": None if chosen is None else f"{chosen[0]}:{chosen[1]}",
            }
            if chosen is not None:
                d = grid[chosen]["test"][:, 0] - base["test"][:, 0]
                entry["test_diff"] = {"diff": float(d.mean()), "ci": ci(d, idx)}
            out["thresholds"][str(tau)] = entry
            a = entry["adaptive"]
            print(f"τ = {tau}: adaptive (accuracy, mean samples) cal {a['cal']}, held out {a['test']}")
            print("| n_min | share | cal: Δ accuracy, samples | held-out: Δ accuracy, samples |\n|---|---|---|---|")
            for k, v in rows.items():
                n, s = k.split(":")
                cal, test = (f"{100 * v[h][0]:+.1f}, {v[h][1]:.1f}" for h in ("cal", "test"))
                print(f"| {n} | {s} | {cal} | {test} |")
            print(f"chosen on the calibration half: {entry['chosen_on_cal']}\n")
    (HERE / "giveup.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
