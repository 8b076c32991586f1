"""Does blending cost scale with interventions? Blended vs base-alone tokens/s.

On one base/guide pair and one batch of questions (greedy, the same
max_tokens), runs: the base alone, then the blend at gamma = 0 (0%
intervention: the guide must do no work), at a gamma calibrated to ~15% of
steps (the 15th percentile of the base's own top probabilities along its
greedy run), and at gamma = 1.5 (100%). For each: emitted tokens/s (best
of --reps interleaved repetitions), the overhead vs base alone, the
intervention rate, guide batches, guide and base tokens, and the time spent
inside the two engines (decode + log-softmax) out of the wall time. The
box may be shared: the fastest repetition is the one with the least process
CPU time, and "cpu ovh" (CPU seconds per token vs base alone) is the overhead
that other processes disturb least.
Prints a table and writes bench/results/blend.json.

    python bench/blend.py [--base smollm2-135m] [--guide smollm2-135m] [--questions 8] [--max-tokens 64]

Left out: sampling mode (same work as greedy), and different-tokenizer pairs
(add --guide qwen2.5-coder-0.5b to measure one; re-tokenization adds base work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from marginal.blend import BlendBackend, BlendConfig, variant_config
from marginal.tasks import load_task
from marginal.types import SampleSpec


def base_top_probs(engine, prompts, max_tokens: int) -> np.ndarray:
    """max p_B at every step of the base's own greedy run (one batch, all prompts)."""
    toks = [engine.tokenize(p) for p in prompts]
    sids = engine.open(len(toks))
    try:
        rows = engine.extend(sids, toks)
        live = list(range(len(sids)))
        tops: list[float] = []
        for _ in range(max_tokens):
            nxt = []
            for r, i in enumerate(live):
                tops.append(float(np.exp(rows[r].max())))
                t = int(rows[r].argmax())
                if not engine.is_eog(t):
                    nxt.append((i, t))
            if not nxt:
                break
            live = [i for i, _ in nxt]
            rows = engine.extend([sids[i] for i in live], [[t] for _, t in nxt])
        return np.array(tops)
    finally:
        engine.release(sids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--guide", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions (the fastest is kept)")
    ap.add_argument("--target", type=float, default=0.15, help="intervention share of the middle setting")
    ap.add_argument("--task", default=None, help="a task name (e.g. gsm8k, needs $MARGINAL_DATA) instead of --data")
    ap.add_argument("--data", default=None, help="jsonl of questions (default: the bundled demo set)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "blend.json"))
    args = ap.parse_args()

    if args.task:
        task = load_task(args.task)
    else:
        data = args.data or str(Path(__file__).resolve().parents[1] / "src" / "marginal" / "data" / "demo.jsonl")
        task = load_task(f"jsonl:{data}")
    problems = task.problems()[: args.questions]
    prior = task.bank()[0]
    prompts = [prior.render(p.question) for p in problems]
    spec = SampleSpec(temperature=0, max_tokens=args.max_tokens)
    n = len(prompts)

    pair = BlendBackend.load(args.base, args.guide, n_ctx=4096, max_seqs=max(n, 1), n_threads=args.threads)
    try:
        tops = base_top_probs(pair.base, prompts, args.max_tokens)
        g15 = float(np.quantile(tops, args.target))
        settings = [
            ("base alone", variant_config("base")),
            ("blend, gamma=0", BlendConfig(gamma=0.0)),
            (f"blend, gamma={g15:.3f}", BlendConfig(gamma=g15)),
            ("blend, gamma=1.5", BlendConfig(gamma=1.5)),
        ]
        pair.with_config(variant_config("base")).generate(
            prompts[:1], SampleSpec(temperature=0, max_tokens=4)
        )  # warm-up
        rows: list[dict] = []
        texts: list[list[str]] = []
        for rep in range(args.reps):  # interleaved repetitions; the fastest of each setting is kept
            for k, (label, cfg) in enumerate(settings):
                b = pair.with_config(cfg)
                b.reset_stats()
                pair.base.reset_stats()
                pair.guide.reset_stats()
                t0, c0 = time.perf_counter(), time.process_time()
                comps = [c[0] for c in b.generate(prompts, spec)]
                secs, cpu = time.perf_counter() - t0, time.process_time() - c0
                st = b.stats
                row = {
                    "setting": label,
                    "gamma": cfg.gamma,
                    "solo": cfg.solo,
                    "seconds": secs,
                    "cpu_seconds": cpu,
                    "tokens": st.steps,
                    "tokens_per_s": st.steps / secs,
                    "intervention_rate": st.interventions / st.steps if st.steps else 0.0,
                    "guide_calls": st.guide_calls,
                    "guide_tokens": st.guide_tokens,
                    "base_tokens": st.base_tokens,
                    "base_engine_seconds": pair.base.stats.seconds,
                    "guide_engine_seconds": pair.guide.stats.seconds,
                    "reps": args.reps,
                }
                if rep == 0:
                    rows.append(row)
                    texts.append([c.text for c in comps])
                elif cpu < rows[k]["cpu_seconds"]:
                    rows[k] = row
        base_tps = rows[0]["tokens_per_s"]
        base_cpu = rows[0]["cpu_seconds"] / rows[0]["tokens"]
        for r, tx in zip(rows, texts):
            r["overhead"] = base_tps / r["tokens_per_s"]
            r["cpu_overhead"] = (r["cpu_seconds"] / r["tokens"]) / base_cpu
            r["texts_equal_base"] = tx == texts[0]
    finally:
        pair.close()

    print(
        f"pair: base {args.base}, guide {args.guide}; {n} questions, greedy, max_tokens {args.max_tokens}; "
        f"base top-prob {int(args.target * 100)}th percentile = {g15:.3f}"
    )
    print(
        f"{'setting':<24}{'tok/s':>8}{'overhead':>10}{'cpu ovh':>9}{'interv.':>9}{'guide calls':>13}{'guide toks':>12}"
        f"{'base toks':>11}{'engine s':>10}{'same text':>11}"
    )
    for r in rows:
        print(
            f"{r['setting']:<24}{r['tokens_per_s']:>8.1f}{r['overhead']:>9.2f}x{r['cpu_overhead']:>8.2f}x{r['intervention_rate']:>9.3f}"
            f"{r['guide_calls']:>13}{r['guide_tokens']:>12}{r['base_tokens']:>11}"
            f"{r['base_engine_seconds'] + r['guide_engine_seconds']:>7.1f}/{r['seconds']:<4.0f}"
            f"{str(r['texts_equal_base']):>9}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "base": args.base,
                "guide": args.guide,
                "task": task.name,
                "questions": n,
                "max_tokens": args.max_tokens,
                "gamma_target": args.target,
                "gamma_calibrated": g15,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
