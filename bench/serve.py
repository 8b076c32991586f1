"""Does `marginal serve` batch concurrent clients into one engine? Throughput and latency by clients.

For each model (the bundled SmolLM2, and Qwen 0.5B when installed), side by side in one run:
  - `marginal serve` (a real server process, the real `openai` async client, streaming):
    1, 4 and 16 concurrent clients x the same questions, budget B, adaptive: requests/s,
    samples/s, tokens/s, p50/p95/p99 latency, time to the first progress event, samples saved;
  - (a) `Session.solve_many` on the same questions and engine settings, in process
    (goal: 16 clients reach >= 0.9x its samples/s);
  - (b) a naive self-consistency proxy on the same server: each question sent as B independent
    single-sample requests (budget 1), the largest client count in flight
    (goal: marginal serve >= 2x its questions/s at 16 clients).
Prints a table and writes bench/results/serve.json.

    python bench/serve.py [--questions 32] [--clients 1,4,16] [--budget 8] [--max-tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "marginal" / "data" / "demo.jsonl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, task: str, args) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "marginal", "serve", "--model", model, "--task", task, "--port", str(port)]
    cmd += ["--budget", str(args.budget), "--max-tokens", str(args.max_tokens), "--slots", str(args.slots)]
    cmd += ["--max-queue", "100000"] + (["--threads", str(args.threads)] if args.threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"marginal serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, f"{base}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("marginal serve did not start within 300 s")


async def one(client, question: str, max_tokens: int, marginal: dict) -> dict:
    t0 = time.perf_counter()
    first = None
    result, usage = None, None
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"marginal": marginal},
    )
    async for ch in stream:
        m = (ch.model_extra or {}).get("marginal")
        if m and "leader" in m and first is None:
            first = time.perf_counter() - t0
        if m and "answer" in m:
            result = m
        if ch.usage is not None:
            usage = ch.usage
    return {
        "seconds": time.perf_counter() - t0,
        "first": first,
        "used": result["used"],
        "saved": result["saved"],
        "tokens": usage.completion_tokens,
    }


async def clients_run(url: str, questions: list[str], clients: int, max_tokens: int, marginal: dict) -> dict:
    import openai

    sem = asyncio.Semaphore(clients)
    async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600) as c:

        async def go(q: str) -> dict:
            async with sem:
                return await one(c, q, max_tokens, marginal)

        t0 = time.perf_counter()
        rows = await asyncio.gather(*(go(q) for q in questions))
        wall = time.perf_counter() - t0
    lat = np.array([r["seconds"] for r in rows])
    firsts = [r["first"] for r in rows if r["first"] is not None]
    samples, tokens = sum(r["used"] for r in rows), sum(r["tokens"] for r in rows)
    return {
        "clients": clients,
        "seconds": wall,
        "requests_s": len(rows) / wall,
        "samples_s": samples / wall,
        "tokens_s": tokens / wall,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "first_progress_p50": float(np.median(firsts)) if firsts else None,
        "samples": samples,
        "saved": sum(r["saved"] for r in rows),
    }


async def naive_run(url: str, questions: list[str], clients: int, budget: int, max_tokens: int) -> dict:
    """Self-consistency through a plain proxy: B single-sample requests per question."""
    import openai

    sem = asyncio.Semaphore(clients)
    async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600) as c:

        async def single(q: str, i: int) -> int:
            async with sem:
                r = await c.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": q}],
                    max_tokens=max_tokens,
                    seed=i,
                    extra_body={"marginal": {"budget": 1, "policy": "repetition"}},
                )
                return r.usage.completion_tokens

        t0 = time.perf_counter()
        toks = await asyncio.gather(*(single(q, i) for q in questions for i in range(budget)))
        wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "seconds": wall,
        "requests_s": len(questions) / wall,
        "samples_s": len(toks) / wall,
        "tokens_s": sum(toks) / wall,
    }


def solve_many_run(model: str, task_name: str, questions: list[str], args) -> dict:
    from marginal.backends import load_backend, slot_options
    from marginal.session import Session
    from marginal.tasks import load_task
    from marginal.types import SampleSpec

    opts = slot_options(args.slots, args.max_tokens)
    if args.threads:
        opts["n_threads"] = args.threads
    backend = load_backend(model, **opts)
    spec = SampleSpec(n=1, temperature=0.7, max_tokens=args.max_tokens)
    with Session(backend, load_task(task_name), spec=spec) as s:
        t0 = time.perf_counter()
        results = s.solve_many(questions, budget=args.budget)
        wall = time.perf_counter() - t0
    samples = sum(r.used for r in results)
    tokens = sum(x.completion_tokens for r in results for x in r.samples)
    return {
        "seconds": wall,
        "requests_s": len(questions) / wall,
        "samples_s": samples / wall,
        "tokens_s": tokens / wall,
        "samples": samples,
    }


def models(wanted: list[str] | None) -> list[str]:
    from marginal.models import CATALOG, is_available

    if wanted:
        return wanted
    out = ["smollm2-135m"]
    qwen = next((n for n in CATALOG if "0.5b" in n and "qwen" in n.lower()), None)
    if qwen and is_available(CATALOG[qwen]):
        out.append(qwen)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", action="append", help="model spec (repeatable; default: bundled, + Qwen 0.5B if installed)"
    )
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    from marginal.tasks import load_task

    task_name = f"jsonl:{DEMO}"
    base = [p.question for p in load_task(task_name).problems()]
    # distinct questions: the demo set, numbered past its length
    questions = [base[i % len(base)] + ("" if i < len(base) else f" (#{i})") for i in range(args.questions)]
    report = {"questions": args.questions, "budget": args.budget, "max_tokens": args.max_tokens, "models": {}}
    for model in models(args.model):
        proc, url = start_server(model, task_name, args)
        try:
            served = [
                asyncio.run(clients_run(url, questions, c, args.max_tokens, {"budget": args.budget})) for c in clients
            ]
            naive = asyncio.run(naive_run(url, questions, max(clients), args.budget, args.max_tokens))
        finally:
            proc.terminate()
            proc.wait(30)
        batch = solve_many_run(model, task_name, questions, args)
        top = served[-1]
        report["models"][model] = {
            "serve": served,
            "solve_many": batch,
            "naive": naive,
            "vs_solve_many": top["samples_s"] / batch["samples_s"],
            "vs_naive": top["requests_s"] / naive["requests_s"],
        }
        print(f"\n{model}: {args.questions} questions, budget {args.budget}, max_tokens {args.max_tokens}")
        head = f"{'run':<24}{'req/s':>8}{'samp/s':>8}{'tok/s':>8}{'p50':>7}{'p95':>7}{'p99':>7}{'first':>7}{'saved':>7}"
        print(head)
        for r in served:
            fp = r["first_progress_p50"]
            print(
                f"{'serve, ' + str(r['clients']) + ' clients':<24}{r['requests_s']:>8.2f}{r['samples_s']:>8.1f}"
                f"{r['tokens_s']:>8.0f}{r['p50']:>7.1f}{r['p95']:>7.1f}{r['p99']:>7.1f}"
                f"{(fp if fp is not None else float('nan')):>7.1f}{r['saved']:>7}"
            )
        print(f"{'(a) solve_many':<24}{batch['requests_s']:>8.2f}{batch['samples_s']:>8.1f}{batch['tokens_s']:>8.0f}")
        print(
            f"{'(b) naive SC, ' + str(naive['clients']) + ' cl.':<24}{naive['requests_s']:>8.2f}"
            f"{naive['samples_s']:>8.1f}{naive['tokens_s']:>8.0f}"
        )
        m = report["models"][model]
        print(
            f"serve at {top['clients']} clients: {m['vs_solve_many']:.2f}x solve_many's samples/s (goal >= 0.9), "
            f"{m['vs_naive']:.2f}x the naive proxy's questions/s (goal >= 2)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
