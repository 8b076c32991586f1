"""GPU throughput check of the transformers and vLLM backends (issue 8's "GPU check").

A random-weight model of a real architecture (Qwen2.5-0.5B shape: 24 layers,
hidden 896, 14 heads / 2 KV heads, vocab 151936, tied embeddings) in bf16,
K prompts x M samples, 256 prompt + 256 new tokens, at 16, 128 and 1024
sequences (K x 16). Side by side, tokens/s (new tokens only) of:

- ``marginal``: ``HFBackend.generate(K prompts, n=M)``, all sequences in one
  batch (each prompt encoded once, its KV cache expanded to its M sequences);
- ``generate_nrs``: plain ``model.generate(K prompts, num_return_sequences=M)``;
- ``generate_1``: plain ``model.generate`` for one sequence at a time (timed
  on ``--single`` sequences and reported as a rate; at 1024 sequences it
  would take hours);
- ``vllm``: ``VLLMBackend.generate(K prompts, n=M)`` at the same sequence
  counts, when ``vllm`` imports and the device is CUDA (``--vllm on`` forces
  it, ``off`` skips it; otherwise the script prints why vLLM was skipped).
  The same random weights are saved to a temporary folder, and a word-level
  tokenizer whose words are the token ids (built offline) to a folder of its
  own; the transformers model is freed and vLLM loads the folder (bf16,
  prefix caching on, its default CUDA graphs / compilation; engine start-up
  is printed, not timed in the rows).

Same sampling for all: temperature 1, no top-k/top-p, no EOS (random weights
would rarely emit one; every sequence runs its full length). Prompts are
random token ids; ``IdTokenizer`` spells a token id as a number so the
backend's text path works without any tokenizer file (nothing is
downloadable on the GPU machine).

Run: ``python bench/gpu_check.py`` on a CUDA machine (writes
``bench/results/gpu_check.json`` or ``--out``); ``--tiny`` runs a 2-layer
model on CPU in seconds to exercise the script. Reference figures for plain
``generate`` on the H200 for this shape: 49 tok/s for one sequence, 199 for
1 x 16, 1.7k for 8 x 16, 11k for 64 x 16; target >= 3x plain ``generate`` at
1024 sequences. Left out: CUDA graphs for the transformers path,
quantization, vLLM's own benchmark tools.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from marginal.backends.hf import HFBackend  # noqa: E402
from marginal.types import SampleSpec  # noqa: E402


class IdTokenizer:
    """A tokenizer over token ids written as numbers: "17 2034 9" <-> [17, 2034, 9]."""

    eos_token_id = None
    pad_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [int(w) for w in text.split()]}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids)


def write_id_tokenizer(folder: Path, vocab: int) -> None:
    """Save a word-level tokenizer whose words are the ids "0" .. str(vocab - 1)
    (the files vLLM loads as the model's tokenizer; no download, no special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({str(i): i for i in range(vocab)}, unk_token="0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tk).save_pretrained(folder)  # no added tokens: "0" stays a word


def vllm_unavailable(mode: str, device: torch.device) -> str | None:
    """Why the vLLM path is skipped, or None when it runs."""
    if mode == "off":
        return "--vllm off"
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return f"vllm does not import ({e}); pip install 'marginal[vllm]'"
    if mode == "auto" and device.type != "cuda":
        return f"device is {device.type}, not CUDA (--vllm on tries anyway)"
    return None


def run_vllm_rows(
    folder: str, prompt_sets: dict[int, list[str]], m: int, new: int, P: int, memory: float, cuda: bool
) -> list[dict]:
    """Load the saved model in vLLM and time K x M sampling per size."""
    from marginal.backends.vllm import VLLMBackend

    rows = []
    t = time.perf_counter()
    vb = VLLMBackend(
        folder,
        tokenizer=str(Path(folder) / "tokenizer"),
        dtype="bfloat16" if cuda else "float32",
        max_model_len=P + new + 8,
        gpu_memory_utilization=memory,
        name="random-qwen2.5-0.5b",
    )
    print(f"vLLM engine started in {time.perf_counter() - t:.1f}s")
    try:
        first = next(iter(prompt_sets.values()))
        vb.generate(first[:1], SampleSpec(n=2, temperature=1.0, max_tokens=4, seed=1))  # warm-up
        for s, ps in prompt_sets.items():
            spec = SampleSpec(n=m, temperature=1.0, max_tokens=new, seed=1)
            t = time.perf_counter()
            out = vb.generate(ps, spec)
            dt = time.perf_counter() - t
            tok = sum(c.completion_tokens for row in out for c in row)
            errors = [c.error for row in out for c in row if c.finish_reason == "error"]
            if errors:
                print(f"vLLM: {len(errors)} error completions at {s} sequences: {errors[0]}")
            rows.append(
                {
                    "engine": "vllm",
                    "sequences": len(ps) * m,
                    "k": len(ps),
                    "m": m,
                    "seconds": dt,
                    "tokens": tok,
                    "tok_s": tok / dt,
                }
            )
    finally:
        vb.close()
    return rows


def build_model(tiny: bool, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tiny:
        cfg = Qwen2Config(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        )
    else:  # Qwen2.5-0.5B
        cfg = Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            tie_word_embeddings=True,
            rms_norm_eps=1e-6,
        )
    cfg.eos_token_id = None
    cfg.bos_token_id = None
    cfg.pad_token_id = 0
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_marginal(b: HFBackend, prompts: list[str], m: int, new: int, device) -> tuple[float, int]:
    spec = SampleSpec(n=m, temperature=1.0, max_tokens=new, seed=1)
    sync(device)
    t = time.perf_counter()
    out = b.generate(prompts, spec)
    sync(device)
    dt = time.perf_counter() - t
    tokens = sum(len(c.token_ids) for row in out for c in row)
    return dt, tokens


def run_generate(model, ids: torch.Tensor, m: int, new: int, device) -> tuple[float, int]:
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new,
            min_new_tokens=new,
            num_return_sequences=m,
        )
    sync(device)
    dt = time.perf_counter() - t
    return dt, (out.shape[1] - ids.shape[1]) * out.shape[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="2-layer model on CPU, short prompts: exercises the script")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--sizes", default=None, help="total sequences, comma separated (default 16,128,1024; tiny 4,8)")
    ap.add_argument("--m", type=int, default=None, help="samples per prompt (default 16; tiny 4)")
    ap.add_argument("--prompt-tokens", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--single", type=int, default=None, help="sequences timed one at a time with generate (default 2)")
    ap.add_argument("--skip-generate", action="store_true", help="time only marginal's backend")
    ap.add_argument(
        "--vllm",
        choices=("auto", "on", "off"),
        default="auto",
        help="vLLM path: auto runs it when vllm imports and the device is CUDA",
    )
    ap.add_argument("--vllm-memory", type=float, default=0.8, help="vLLM's gpu_memory_utilization")
    ap.add_argument("--out", default=None, help="JSON output (default bench/results/gpu_check[_tiny].json)")
    a = ap.parse_args(argv)

    tiny = a.tiny
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not tiny else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = [int(x) for x in (a.sizes or ("4,8" if tiny else "16,128,1024")).split(",")]
    m = a.m or (4 if tiny else 16)
    P = a.prompt_tokens or (16 if tiny else 256)
    new = a.new_tokens or (8 if tiny else 256)
    single = a.single if a.single is not None else (1 if tiny else 2)
    out_path = Path(a.out or Path(__file__).parent / "results" / ("gpu_check_tiny.json" if tiny else "gpu_check.json"))

    model = build_model(tiny, device, dtype)
    vocab = model.config.vocab_size
    b = HFBackend.from_model(model, IdTokenizer(), max_seqs=max(sizes), name="random-qwen2.5-0.5b")
    rng = np.random.default_rng(0)

    def prompts_for(k: int) -> tuple[list[str], torch.Tensor]:
        ids = rng.integers(1, vocab, size=(k, P))
        return [" ".join(map(str, row)) for row in ids], torch.tensor(ids, device=device)

    # warm-up (kernels, allocator)
    wp, wi = prompts_for(1)
    run_marginal(b, wp, 2, 4, device)
    if not a.skip_generate:
        run_generate(model, wi, 2, 4, device)

    rows = []
    prompt_sets: dict[int, list[str]] = {}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"{gpu} · {'tiny' if tiny else 'Qwen2.5-0.5B-shaped'} random weights · {dtype} · "
        f"{P} prompt + {new} new tokens · M = {m}"
    )
    if not a.skip_generate and single > 0:
        p1, i1 = prompts_for(1)
        dt = tok = 0.0
        for _ in range(single):
            d, t = run_generate(model, i1, 1, new, device)
            dt, tok = dt + d, tok + t
        rows.append(
            {
                "engine": "generate_1",
                "sequences": 1,
                "k": 1,
                "m": 1,
                "seconds": dt,
                "tokens": int(tok),
                "tok_s": tok / dt,
            }
        )
    for s in sizes:
        k = max(1, s // m)
        ps, ids = prompts_for(k)
        prompt_sets[s] = ps
        dt, tok = run_marginal(b, ps, m, new, device)
        rows.append(
            {"engine": "marginal", "sequences": k * m, "k": k, "m": m, "seconds": dt, "tokens": tok, "tok_s": tok / dt}
        )
        if not a.skip_generate:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            dt, tok = run_generate(model, ids, m, new, device)
            rows.append(
                {
                    "engine": "generate_nrs",
                    "sequences": k * m,
                    "k": k,
                    "m": m,
                    "seconds": dt,
                    "tokens": tok,
                    "tok_s": tok / dt,
                }
            )
        if device.type == "cuda":
            torch.cuda.empty_cache()

    max_mem = (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None
    skipped = vllm_unavailable(a.vllm, device)
    vllm_version = None
    if skipped is None:
        import vllm

        vllm_version = vllm.__version__
        with tempfile.TemporaryDirectory(prefix="gpu_check_vllm_") as d:
            model.save_pretrained(d)  # the same random weights, loaded by vLLM from disk
            write_id_tokenizer(Path(d) / "tokenizer", vocab)  # its own folder: no config.json to map it to Qwen2's
            del b, model  # free the GPU for vLLM's memory profiling
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows += run_vllm_rows(d, prompt_sets, m, new, P, a.vllm_memory, device.type == "cuda")
    else:
        print(f"vLLM skipped: {skipped}")

    print(f"{'engine':<14}{'seqs':>6}{'K x M':>10}{'seconds':>10}{'tokens':>10}{'tok/s':>10}{'vs generate':>13}")
    base = {r["sequences"]: r["tok_s"] for r in rows if r["engine"] == "generate_nrs"}
    for r in rows:
        ratio = (
            r["tok_s"] / base[r["sequences"]]
            if r["engine"] in ("marginal", "vllm") and r["sequences"] in base
            else None
        )
        print(
            f"{r['engine']:<14}{r['sequences']:>6}{str(r['k']) + ' x ' + str(r['m']):>10}{r['seconds']:>10.2f}"
            f"{r['tokens']:>10}{r['tok_s']:>10.0f}{(f'{ratio:.2f}x' if ratio else ''):>13}"
        )
    result = {
        "device": gpu,
        "dtype": str(dtype),
        "tiny": tiny,
        "prompt_tokens": P,
        "new_tokens": new,
        "m": m,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "max_memory_gb": max_mem,
        "vllm": vllm_version,
        "vllm_skipped": skipped,
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
