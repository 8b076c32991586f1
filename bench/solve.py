"""Does a policy starve the engine? solve_many vs. one fixed batch, same samples.

Side by side in one run, on the same model and questions:
  (a) ``Session.solve_many`` with the adaptive policy (budget B per question),
  (b) the exact (prior, sample index) sets that (a) drew, regenerated as one
      fixed batch per (offset, n) group (what an oracle scheduler would submit),
and the adaptive policy's own time per decision (no model involved).
Prints a table and writes bench/results/solve.json.

    python bench/solve.py [--model smollm2-135m] [--questions 32] [--budget 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from marginal.backends import load_backend
from marginal.policies import Adaptive
from marginal.session import Session
from marginal.tasks import load_task
from marginal.types import SampleSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--data", default=None, help="jsonl of questions (default: the bundled demo set)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "solve.json"))
    args = ap.parse_args()

    data = args.data or str(Path(__file__).resolve().parents[1] / "src" / "marginal" / "data" / "demo.jsonl")
    task = load_task(f"jsonl:{data}")
    problems = (task.problems() * (args.questions // len(task.problems()) + 1))[: args.questions]
    problems = [replace(p, id=f"{p.id}#{i}") for i, p in enumerate(problems)]
    spec = SampleSpec(n=1, temperature=0.7, max_tokens=args.max_tokens, seed=0)
    backend = load_backend(args.model)
    session = Session(backend, task, spec=spec)
    policy = Adaptive()

    t0 = time.perf_counter()
    results = session.solve_many(problems, budget=args.budget, policy=policy)
    t_policy = time.perf_counter() - t0
    tok_policy = sum(s.completion_tokens for r in results for s in r.samples)
    n_policy = sum(r.used for r in results)

    # (b) the same (prompt, sample index) set, one call per (first index, n) group.
    groups = defaultdict(list)
    by_name = {c.name: c for c in session.priors}
    for p, r in zip(problems, results):
        per = defaultdict(list)
        for s in r.samples:
            per[s.prior].append(s.index)
        for prior, idx in per.items():
            groups[(min(idx), len(idx))].append(by_name[prior].render(p.question))
    t0 = time.perf_counter()
    tok_fixed = 0
    for (first, n), prompts in groups.items():
        outs = backend.generate(prompts, replace(spec, n=n, first_index=first))
        tok_fixed += sum(c.completion_tokens for o in outs for c in o)
    t_fixed = time.perf_counter() - t0

    answers = [[["1", "2", "1"], ["1", "1"], ["3", "1"], []] + [[]] * 4, [["7"] * 4, ["7", "8"]] + [[]] * 6]
    reps = 300
    t0 = time.perf_counter()
    for _ in range(reps):
        for a in answers:
            policy.decide(a, args.budget)
    per_decision_ms = (time.perf_counter() - t0) / (reps * len(answers)) * 1e3
    backend.close()

    row = {
        "model": args.model,
        "questions": args.questions,
        "budget": args.budget,
        "max_tokens": args.max_tokens,
        "policy_samples": n_policy,
        "policy_tokens": tok_policy,
        "policy_seconds": t_policy,
        "policy_tok_s": tok_policy / t_policy,
        "fixed_tokens": tok_fixed,
        "fixed_seconds": t_fixed,
        "fixed_tok_s": tok_fixed / t_fixed,
        "ratio": (tok_policy / t_policy) / (tok_fixed / t_fixed),
        "decision_ms": per_decision_ms,
        "mean_samples_used": n_policy / args.questions,
    }
    print(f"{'run':<28}{'samples':>9}{'tokens':>9}{'seconds':>9}{'tok/s':>9}")
    print(f"{'solve_many (adaptive)':<28}{n_policy:>9}{tok_policy:>9}{t_policy:>9.1f}{row['policy_tok_s']:>9.1f}")
    print(f"{'same samples, fixed batch':<28}{n_policy:>9}{tok_fixed:>9}{t_fixed:>9.1f}{row['fixed_tok_s']:>9.1f}")
    print(
        f"throughput ratio (target >= 0.90): {row['ratio']:.2f}; "
        f"adaptive decision: {per_decision_ms:.3f} ms (target < 1 ms)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
