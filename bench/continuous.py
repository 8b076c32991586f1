"""Continuous batching against barrier batching and against the engine's ceiling, side by side.

One model, one thread count, GSM8K, one run of each, in this order:

1. ceiling: raw ``llama_decode`` with every slot busy: S sequences, each
   with its own context of a GSM8K sample's mean length (320 tokens: a
   240-token prompt plus half a 115-token completion), that each decode one
   token per step (no sampling, no Python bookkeeping), tokens per second.
   This is the most the engine can do at S. The curve: the same at 1, 2,
   4, ... S busy slots, from a short position and from the mean one, which
   shows from how many sequences on the engine stops gaining, and what
   attending to long KV costs.
2. adaptive: ``allocate`` with the adaptive policy, budget B, on P problems
   of the bank, through (a) the barrier scheduler (every step of every
   question waits for the slowest request: ``Barrier`` around the engine,
   one ``generate`` per round) and (b) the continuous one (each question's
   next requests join the running batch as soon as its samples are back).
   Same seeds. Wall time, generated tokens per second, mean active slots.
3. grid: K priors x M samples on Q problems through ``execute`` with the
   barrier batches of ``--batch-samples`` samples per call against the
   continuous stream, into throwaway stores.
4. prefix cache: one few-shot prior over the grid's problems, prompt tokens
   evaluated with the prefix cache off and on, against the exemplars' share
   of the prompt tokens.
5. layout: the KV cache as one stream per sequence against one unified
   cache: the ceiling with sequence ids in order and shuffled, and a
   continuous grid run on a few problems, each layout on its own engine.

Both schedulers run on the same engine, built as ``marginal run --slots``
builds it (``slot_options``: one KV stream per sequence); the barrier
rows therefore already include the engine's own slot reuse within a call,
and the ratio measures the scheduling. The table is printed and the numbers
written as JSON (default bench/results/continuous.json, one entry per model).

    python bench/continuous.py                                  # Qwen2.5-Coder-0.5B if installed
    python bench/continuous.py --problems 8 --grid-problems 4   # a quick look

Left out: HTTP and vLLM engines (they batch on their own side), memory use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from marginal.allocate import allocate
from marginal.backends import slot_options
from marginal.backends.llamacpp import LlamaCppBackend
from marginal.backends.streaming import Barrier
from marginal.models import CATALOG, is_available, resolve_model
from marginal.policies import make_policy
from marginal.runner import RunPlan, execute
from marginal.store import Store
from marginal.tasks import load_task
from marginal.types import SampleSpec


def ceiling(llm: LlamaCppBackend, slots: int, steps: int, start: int = 16, shuffled: bool = False) -> dict:
    """Tokens/s of bare llama_decode with ``slots`` sequences decoding one token each per step, each
    from its own context of ``start`` tokens (as distinct problems have; nothing shared between
    sequences). Sequence ids 0..slots-1 in order, or ``shuffled`` in the batch as continuous
    batching leaves them (which only a per-sequence-stream cache minds)."""
    import llama_cpp as ll

    e = llm.engine
    ids = np.random.default_rng(0).permutation(slots) if shuffled else np.arange(slots)
    with e.idle():
        tok, pos, seq, out = e.batch_arrays
        ll.llama_memory_clear(e.memory, True)
        words = llm.tokenize("Count slowly from one to one thousand: one, two, three, four, five,")
        text = words * ((start + slots) // len(words) + 1)
        for s in range(slots):  # sequence s: the text from token s on, so no two contexts are equal
            for a in range(0, start, e.n_batch):
                b = min(start, a + e.n_batch)
                tok[: b - a], pos[: b - a], seq[: b - a], out[: b - a] = text[s + a : s + b], np.arange(a, b), s, 0
                assert e.decode(b - a)
        t = time.perf_counter()
        for st in range(steps):
            tok[:slots] = words[st % len(words)]
            pos[:slots] = start + st
            seq[:slots] = ids
            out[:slots] = 1
            assert e.decode(slots)
        dt = time.perf_counter() - t
        ll.llama_memory_clear(e.memory, True)
    return {
        "slots": slots,
        "start": start,
        "shuffled": shuffled,
        "steps": steps,
        "tokens": slots * steps,
        "seconds": dt,
        "tok_s": slots * steps / dt,
    }


def ceiling_curve(llm: LlamaCppBackend, max_slots: int, steps: int, starts: tuple[int, ...]) -> list[dict]:
    """The ceiling at 1, 2, 4, ... ``max_slots`` busy slots and at each start position: where the engine
    stops gaining from more sequences (compute-bound), and what long KV costs."""
    slots = sorted({min(max_slots, 2**i) for i in range(max_slots.bit_length() + 1)})
    return [ceiling(llm, n, steps, start) for start in starts for n in slots]


def _engine_row(llm: LlamaCppBackend, seconds: float, tokens: int, samples: int) -> dict:
    s = llm.stats
    return {
        "seconds": seconds,
        "tokens": tokens,
        "samples": samples,
        "tok_s": tokens / seconds,
        "mean_active_slots": s.active_steps / max(1, s.decode_calls),
        "decode_calls": s.decode_calls,
        "prompt_tokens_evaluated": s.prompt_tokens_evaluated,
        "prefix_tokens_reused": s.prefix_tokens_reused,
    }


def adaptive(llm: LlamaCppBackend, task, problems, budget: int, spec: SampleSpec, barrier: bool) -> dict:
    priors = task.bank()
    engine = Barrier(llm) if barrier else llm
    llm.reset_stats()
    t = time.perf_counter()
    states = allocate(
        problems, priors, make_policy("adaptive", budget, len(priors)), budget, task, lambda prior: engine, spec
    )
    dt = time.perf_counter() - t
    samples = [s for st in states for s in st.samples]
    row = _engine_row(llm, dt, sum(s.completion_tokens for s in samples), len(samples))
    row["answers"] = [[s.answer for s in st.samples] for st in states]
    return row


def grid(
    llm: LlamaCppBackend, task, problems, k: int, m: int, spec: SampleSpec, barrier: bool, batch_samples: int
) -> dict:
    plan = RunPlan(task.name, llm.name, replace(spec, n=m), tuple(task.bank()[:k]), tuple(problems))
    engine = Barrier(llm) if barrier else llm
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "grid.db")
        llm.reset_stats()
        t = time.perf_counter()
        run_id = execute(plan, task, lambda prior: engine, store, batch_samples=batch_samples)
        dt = time.perf_counter() - t
        samples = store.samples(run_id)
        store.close()
    return _engine_row(llm, dt, sum(s.completion_tokens for s in samples), len(samples))


def prefix_cache(path: Path, args, task, problems, prior_name: str) -> dict:
    prior = next(p for p in task.bank() if p.name == prior_name)
    prompts = [prior.render(p.question) for p in problems]
    spec = SampleSpec(n=1, max_tokens=1, seed=0)
    out = {}
    for label, cache in (("off", 0), ("on", 16)):
        with LlamaCppBackend(path, **{**_engine_options(args), "prefix_cache": cache}) as llm:
            llm.generate(prompts[:1], spec)  # warm-up
            llm.reset_stats()
            llm.generate(prompts, spec)
            out[label] = llm.stats.prompt_tokens_evaluated
            lens = [len(llm.tokenize(p)) for p in prompts]
            bare = [
                len(
                    llm.tokenize(type(prior)(name="x", template=prior.template, system=prior.system).render(p.question))
                )
                for p in problems
            ]
    share = 1 - sum(bare) / sum(lens)
    return {
        "prior": prior_name,
        "problems": len(problems),
        "prompt_tokens": sum(lens),
        "evaluated_off": out["off"],
        "evaluated_on": out["on"],
        "reduction": 1 - out["on"] / out["off"],
        "exemplar_share": share,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = "qwen2.5-coder-0.5b" if is_available(CATALOG["qwen2.5-coder-0.5b"]) else "smollm2-135m"
    ap.add_argument("--model", default=default)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--problems", type=int, default=32, help="adaptive run: problems")
    ap.add_argument("--grid-problems", type=int, default=16)
    ap.add_argument("--grid-k", type=int, default=4)
    ap.add_argument("--grid-m", type=int, default=8)
    ap.add_argument("--batch-samples", type=int, default=64, help="barrier grid: samples per generate call")
    ap.add_argument("--ceiling-steps", type=int, default=64)
    ap.add_argument("--ceiling-start", type=int, default=320, help="ceiling: each sequence's context length")
    ap.add_argument("--layout-problems", type=int, default=2, help="layout: grid problems per KV layout")
    ap.add_argument(
        "--curve-starts",
        default="16,320",
        help="ceiling curve: start positions (320: a GSM8K sample's mean position, prompt + half its completion)",
    )
    ap.add_argument("--fewshot-prior", default="fewshot-a")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: curve,adaptive,grid,prefix,layout")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "continuous.json"))
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    path = resolve_model(args.model)
    task = load_task("gsm8k")
    problems = task.problems()
    spec = SampleSpec(n=1, temperature=0.7, max_tokens=args.max_tokens, seed=args.seed)
    result: dict = {
        "model": args.model,
        "model_file": path.name,
        "threads": args.threads,
        "slots": args.slots,
        "engine": {k: v for k, v in _engine_options(args).items() if k != "n_threads"},
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "complete": False,
    }
    print(
        f"model {args.model}, {args.threads} threads, {args.slots} slots, engine {result['engine']}, "
        f"max_tokens {args.max_tokens}",
        flush=True,
    )
    with LlamaCppBackend(path, **_engine_options(args)) as llm:
        llm.generate(["Hello"], SampleSpec(n=2, max_tokens=4, seed=1))  # warm-up
        c = result["ceiling"] = ceiling(llm, args.slots, args.ceiling_steps, args.ceiling_start)
        print(
            f"ceiling: raw llama_decode, {args.slots} slots busy from position {args.ceiling_start}: "
            f"{c['tok_s']:.1f} tok/s",
            flush=True,
        )
        _save(result, args)
        if "curve" not in skip:
            starts = tuple(int(x) for x in args.curve_starts.split(","))
            curve = result["ceiling_curve"] = ceiling_curve(llm, args.slots, args.ceiling_steps, starts)
            print("ceiling curve: raw llama_decode tok/s by busy slots (rows: start position)")
            print(f"  {'start':>6} " + " ".join(f"{r['slots']:>7}" for r in curve if r["start"] == curve[0]["start"]))
            for st in dict.fromkeys(r["start"] for r in curve):
                print(f"  {st:>6} " + " ".join(f"{r['tok_s']:7.1f}" for r in curve if r["start"] == st), flush=True)
            _save(result, args)
        if "adaptive" not in skip:
            qs = problems[: args.problems]
            rows = {
                name: adaptive(llm, task, qs, args.budget, spec, barrier=(name == "barrier"))
                for name in ("barrier", "continuous")
            }
            rows["same_answers_share"] = float(
                np.mean([a == b for a, b in zip(rows["barrier"]["answers"], rows["continuous"]["answers"])])
            )
            for r in ("barrier", "continuous"):
                rows[r].pop("answers")
            rows.update(problems=len(qs), budget=args.budget, ceiling_tok_s=c["tok_s"])
            result["adaptive"] = rows
            _print(f"adaptive B={args.budget}, {len(qs)} problems", rows, c["tok_s"])
            _save(result, args)
        if "grid" not in skip:
            qs = problems[: args.grid_problems]
            rows = {
                name: grid(
                    llm,
                    task,
                    qs,
                    args.grid_k,
                    args.grid_m,
                    spec,
                    barrier=(name == "barrier"),
                    batch_samples=args.batch_samples,
                )
                for name in ("barrier", "continuous")
            }
            rows.update(problems=len(qs), k=args.grid_k, m=args.grid_m, ceiling_tok_s=c["tok_s"])
            result["grid"] = rows
            _print(f"grid {args.grid_k}x{args.grid_m}, {len(qs)} problems", rows, c["tok_s"])
            _save(result, args)
    if "prefix" not in skip:
        p = result["prefix_cache"] = prefix_cache(path, args, task, problems[: args.grid_problems], args.fewshot_prior)
        print(
            f"prefix cache, {p['prior']} over {p['problems']} problems: prompt tokens evaluated "
            f"{p['evaluated_off']} -> {p['evaluated_on']} ({100 * p['reduction']:.0f}% fewer; "
            f"exemplars are {100 * p['exemplar_share']:.0f}% of the prompt tokens)",
            flush=True,
        )
    if "layout" not in skip:
        lay = result["layout"] = layout(path, args, task, problems[: args.layout_problems], spec)
        print(f"KV layout, {args.slots} slots, ceiling from position {args.ceiling_start} and a continuous grid")
        print(f"  {'':>8} {'ceiling':>8} {'shuffled':>8} {'grid tok/s':>10} {'active':>6}")
        for name in ("streams", "unified"):
            r = lay[name]
            print(
                f"  {name:>8} {r['ceiling']['tok_s']:8.1f} {r['ceiling_shuffled']['tok_s']:8.1f} "
                f"{r['grid']['tok_s']:10.1f} {r['grid']['mean_active_slots']:6.1f}",
                flush=True,
            )
    result["complete"] = True
    _save(result, args)
    print(f"wrote {args.out}")
    return 0


def layout(path: Path, args, task, problems, spec: SampleSpec) -> dict:
    """Per-sequence KV streams against one unified cache, each on its own engine: the ceiling with ids
    in order and shuffled, and a continuous K x M grid on ``problems``."""
    out: dict = {"problems": len(problems), "k": args.grid_k, "m": args.grid_m}
    for name, unified in (("streams", False), ("unified", True)):
        with LlamaCppBackend(path, **{**_engine_options(args), "kv_unified": unified}) as llm:
            llm.generate(["Hello"], SampleSpec(n=2, max_tokens=4, seed=1))  # warm-up
            out[name] = {
                "ceiling": ceiling(llm, args.slots, args.ceiling_steps, args.ceiling_start),
                "ceiling_shuffled": ceiling(llm, args.slots, args.ceiling_steps, args.ceiling_start, shuffled=True),
                "grid": grid(llm, task, problems, args.grid_k, args.grid_m, spec, False, args.batch_samples),
            }
    return out


def _engine_options(args: argparse.Namespace) -> dict:
    """The engine `marginal run --slots` builds (one KV stream per sequence, sized for a prompt and
    ``max_tokens``)."""
    return slot_options(args.slots, args.max_tokens, threads=args.threads)


def _save(result: dict, args: argparse.Namespace) -> None:
    """Write what is measured so far (each part as it finishes: a stopped run keeps its finished parts)."""
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_end": os.getloadavg()}
    result["python"] = sys.version.split()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()).get("runs", {}) if out.exists() else {}
    # parts skipped in this run keep their earlier figures; each part records its own sizes and ceiling
    runs[args.model] = {**runs.get(args.model, {}), **result}
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")


def _print(title: str, rows: dict, ceiling_tok_s: float) -> None:
    b, c = rows["barrier"], rows["continuous"]
    print(f"{title}:")
    print(f"  {'':>10} {'wall s':>8} {'tok/s':>8} {'x ceiling':>9} {'active slots':>12} {'samples':>7}")
    for name, r in (("barrier", b), ("continuous", c)):
        print(
            f"  {name:>10} {r['seconds']:8.1f} {r['tok_s']:8.1f} {r['tok_s'] / ceiling_tok_s:9.2f} "
            f"{r['mean_active_slots']:12.1f} {r['samples']:7d}"
        )
    print(f"  continuous / barrier: {c['tok_s'] / b['tok_s']:.2f}x tokens/s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
