"""Batched sampling benchmark: marginal's llama.cpp sampler against a naive loop
and against the engine's ceiling, side by side in one run.

For each n in --n (default 1,4,8,16), with the same model, 4 chat prompts,
SampleSpec and thread count:

(a) batched  ``LlamaCppBackend.generate(prompts, spec)``: each prompt evaluated
    once, all 4*n sequences decoded in one llama_batch per step, C samplers.
(b) naive    a loop of ``llama_cpp.Llama.create_completion`` calls, one per
    completion (same seeds, temperature, top_p/top_k/min_p, max_tokens).
(c) raw      ``llama_decode`` alone on the same context: the prompts evaluated
    once, then (a)'s exact decode schedule replayed (each step decodes the
    tokens (a) decoded at that step, logits computed) with no sampling, no
    logits read, no Python bookkeeping beyond filling the batch.

Throughput is generated tokens per wall second; (a)/(c) is the share of the
engine's ceiling that the sampler keeps. The three are run interleaved --reps
times and the best run of each is kept (the machine may be shared); "sampler
share" is the part of (a)'s wall time spent outside llama_decode, a ratio
that other load on the machine disturbs less. The table is printed and the numbers
written as JSON (default bench/results/sampling.json, one entry per model).

    python bench/sampling.py                       # bundled SmolLM2-135M
    python bench/sampling.py --model qwen2.5-coder-1.5b --n 8 --max-tokens 64

Left out: prompt-prefix sharing across prompts, GPU runs, memory use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from marginal.backends.llamacpp import LlamaCppBackend
from marginal.models import resolve_model
from marginal.types import Chat, Message, SampleSpec

QUESTIONS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain step by step how to compute 17 * 24 without a calculator.",
    "Describe the water cycle to a ten-year-old.",
    "Give three tips for writing clear Python code, with an example for each.",
]


def prompts() -> list[Chat]:
    return [Chat((Message("user", q),)) for q in QUESTIONS]


def run_batched(backend: LlamaCppBackend, spec: SampleSpec) -> tuple[dict, list]:
    backend.reset_stats()
    t = time.perf_counter()
    out = backend.generate(prompts(), spec)
    dt = time.perf_counter() - t
    s = backend.stats
    tokens = sum(len(c.token_ids) for row in out for c in row)
    assert tokens == s.tokens_generated
    return {
        "seconds": dt,
        "tokens": tokens,
        "tok_s": tokens / dt,
        "prompt_tokens_evaluated": s.prompt_tokens_evaluated,
        "decode_calls": s.decode_calls,
        "decode_seconds": s.decode_seconds,
    }, out


def run_raw(backend: LlamaCppBackend, completions: list) -> dict:
    """Replay (a)'s decode schedule on the backend's own context, without sampling."""
    import llama_cpp as ll

    engine = backend.engine
    ctx, mem = engine.ctx, engine.memory
    tok, pos, seq, out = engine.batch_arrays
    batch = engine.batch
    toks = [backend.tokenize(p) for p in prompts()]
    ll.llama_memory_clear(mem, True)
    n = len(completions[0])
    t = time.perf_counter()
    k = 0
    for i, tt in enumerate(toks):  # every prompt once, in one batch (as (a) does)
        tok[k : k + len(tt)] = tt
        pos[k : k + len(tt)] = np.arange(len(tt))
        seq[k : k + len(tt)] = i * n
        out[k : k + len(tt)] = 0
        out[k + len(tt) - 1] = 1
        k += len(tt)
    batch.n_tokens = k
    assert ll.llama_decode(ctx, batch) == 0
    for i, tt in enumerate(toks):
        for j in range(1, n):
            ll.llama_memory_seq_cp(mem, i * n, i * n + j, 0, len(tt))
    seqs = [(i * n + j, len(toks[i]), c.token_ids) for i, row in enumerate(completions) for j, c in enumerate(row)]
    steps = max(len(ids) for _, _, ids in seqs)
    calls = 1
    for st in range(steps - 1):  # (a) decodes every sampled token but each sequence's last
        live = [(sid, p0, ids) for sid, p0, ids in seqs if len(ids) > st + 1]
        m = len(live)
        tok[:m] = [ids[st] for _, _, ids in live]
        pos[:m] = [p0 + st for _, p0, _ in live]
        seq[:m] = [sid for sid, _, _ in live]
        out[:m] = 1
        batch.n_tokens = m
        assert ll.llama_decode(ctx, batch) == 0
        calls += 1
    dt = time.perf_counter() - t
    ll.llama_memory_clear(mem, True)
    tokens = sum(len(ids) for _, _, ids in seqs)
    return {
        "seconds": dt,
        "tokens": tokens,
        "tok_s": tokens / dt,
        "prompt_tokens_evaluated": sum(len(tt) for tt in toks),
        "decode_calls": calls,
    }


def run_naive(llm, backend: LlamaCppBackend, spec: SampleSpec) -> dict:
    """One create_completion per completion; counts the prompt tokens Llama evaluates
    (it reuses the KV of the longest common prefix with its previous call)."""
    evals: list[int] = []
    orig = llm.eval

    def counting_eval(tokens):
        evals.append(len(tokens))
        return orig(tokens)

    llm.eval = counting_eval
    tokens = 0
    prompt_evaluated = 0
    t = time.perf_counter()
    try:
        for p in prompts():
            text = backend.render(p)
            for j in range(spec.n):
                evals.clear()
                r = llm.create_completion(
                    text,
                    max_tokens=spec.max_tokens,
                    temperature=spec.temperature,
                    top_p=spec.top_p,
                    top_k=spec.top_k,
                    min_p=spec.min_p,
                    repeat_penalty=1.0,
                    seed=spec.sequence_seed(p.key(), j),
                    stop=list(spec.stop),
                )
                tokens += r["usage"]["completion_tokens"]
                prompt_evaluated += evals[0] if evals else 0
    finally:
        llm.eval = orig
    dt = time.perf_counter() - t
    return {"seconds": dt, "tokens": tokens, "tok_s": tokens / dt, "prompt_tokens_evaluated": prompt_evaluated}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="catalog name or .gguf path")
    ap.add_argument("--n", default="1,4,8,16", help="completions per prompt, comma-separated")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions; the best of each is kept")
    ap.add_argument("--skip-naive", action="store_true", help="skip (b), the slowest part")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampling.json"))
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.n.split(",")]
    path = resolve_model(args.model)
    max_seqs = max(ns) * len(QUESTIONS)
    n_ctx = max(2048, len(QUESTIONS) * 128 + max_seqs * (args.max_tokens + 8))
    backend = LlamaCppBackend(path, n_ctx=n_ctx, max_seqs=max_seqs, n_threads=args.threads)
    llm = None
    if not args.skip_naive:
        from llama_cpp import Llama

        llm = Llama(str(path), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    # warm-up: page the weights in and build the graphs
    backend.generate(prompts()[:1], SampleSpec(n=2, max_tokens=4, seed=1))
    if llm is not None:
        llm.create_completion("Hello", max_tokens=4)

    rows = []
    print(
        f"model {args.model} ({path.name}), {args.threads} threads, max_tokens {args.max_tokens}, "
        f"T={args.temperature}, {len(QUESTIONS)} prompts",
        flush=True,
    )
    head = (
        f"{'n':>3} {'seqs':>4} | {'(a) batched tok/s':>17} {'(b) naive tok/s':>15} {'(c) raw tok/s':>13} | "
        f"{'a/b':>5} {'a/c':>5} {'smpl%':>5} | prompt tokens evaluated a/b/c"
    )
    print(head)
    print("-" * len(head))
    for n in ns:
        spec = SampleSpec(n=n, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
        # interleaved repetitions, best (least disturbed) of each: the machine is shared
        a_runs, c_runs, b_runs = [], [], []
        for _ in range(args.reps):
            a, comps = run_batched(backend, spec)
            a_runs.append(a)
            c_runs.append(run_raw(backend, comps))
            if llm is not None:
                b_runs.append(run_naive(llm, backend, spec))
        a = max(a_runs, key=lambda r: r["tok_s"])
        c = max(c_runs, key=lambda r: r["tok_s"])
        b = max(b_runs, key=lambda r: r["tok_s"]) if b_runs else None
        a["sampler_share"] = 1 - a["decode_seconds"] / a["seconds"]
        a["all_tok_s"] = [r["tok_s"] for r in a_runs]
        c["all_tok_s"] = [r["tok_s"] for r in c_runs]
        if b:
            b["all_tok_s"] = [r["tok_s"] for r in b_runs]
        row = {
            "n": n,
            "sequences": n * len(QUESTIONS),
            "batched": a,
            "naive": b,
            "raw_decode": c,
            "a_over_b": a["tok_s"] / b["tok_s"] if b else None,
            "a_over_c": a["tok_s"] / c["tok_s"],
        }
        rows.append(row)
        bs = f"{b['tok_s']:15.1f}" if b else f"{'-':>15}"
        ab = f"{row['a_over_b']:5.2f}" if b else f"{'-':>5}"
        pb = b["prompt_tokens_evaluated"] if b else "-"
        print(
            f"{n:>3} {n * len(QUESTIONS):>4} | {a['tok_s']:17.1f} {bs} {c['tok_s']:13.1f} | "
            f"{ab} {row['a_over_c']:5.2f} {100 * a['sampler_share']:5.1f} | "
            f"{a['prompt_tokens_evaluated']}/{pb}/{c['prompt_tokens_evaluated']}",
            flush=True,
        )
    result = {
        "model": args.model,
        "model_file": path.name,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "prompts": len(QUESTIONS),
        "prompt_tokens": [len(backend.tokenize(p)) for p in prompts()],
        "n_ctx": backend.n_ctx,
        "max_seqs": max_seqs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_end": os.getloadavg()},
        "python": sys.version.split()[0],
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()).get("runs", {}) if out.exists() else {}
    runs[args.model] = result  # one entry per model, the latest run of each
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {out}")
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
