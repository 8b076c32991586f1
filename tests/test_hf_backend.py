"""The transformers backend on CPU.

Most tests use a tiny random-weight Qwen2 (2 layers, hidden 64) with a
byte-level tokenizer built here (257 tokens), so they are fast and check the
engine against references: the KV-cache expansion against a full forward
without cache, greedy decoding against ``model.generate``, the sampler
against the target distribution computed by hand. One slow test loads the
bundled SmolLM2 GGUF through transformers.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from marginal.backends.hf import HFBackend, sample_tokens, step_uniforms  # noqa: E402
from marginal.errors import MarginalError  # noqa: E402
from marginal.types import Chat, Message, SampleSpec, prompt_key  # noqa: E402


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<|eos|>"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|eos|>", pad_token="<|eos|>")
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    return tok


@pytest.fixture(scope="module")
def tiny():
    tok = _byte_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.eos_token_id,
    )
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # sharper than the default init: completions differ by seed, yet repeat tokens
        model.lm_head.weight.mul_(8.0)
    return HFBackend.from_model(model, tok, name="tiny-qwen2")


PROMPTS = ["Hello there, how are you?", Chat((Message("system", "Be brief."), Message("user", "Hi"))), "x"]


def _ref_logprob(b: HFBackend, prompt, token_ids) -> float:
    """Sum of log-softmax of the sampled tokens from one forward over prompt + completion, no cache."""
    ids = torch.tensor([b.tokenize(prompt) + list(token_ids)])
    with torch.no_grad():
        logits = b.model(input_ids=ids).logits[0].float()
    P = ids.shape[1] - len(token_ids)
    lp = torch.log_softmax(logits[P - 1 : -1], -1)
    return float(lp.gather(1, torch.tensor(token_ids)[:, None]).sum())


# ------------------------------------------------------------------- sampler


def _target(logits: np.ndarray, spec: SampleSpec) -> np.ndarray:
    """The sampling distribution by hand: temperature, top_k, top_p, min_p (vLLM order)."""
    p = np.exp(logits / spec.temperature - (logits / spec.temperature).max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros(len(p), bool)
    kept = order[: spec.top_k] if spec.top_k else order
    q = p[kept] / p[kept].sum()
    acc = 0.0
    for tok, pk in zip(kept, q):
        if acc >= spec.top_p:
            break
        if pk >= spec.min_p * q[0]:
            keep[tok] = True
        acc += pk
    out = np.where(keep, p, 0.0)
    return out / out.sum()


@pytest.mark.parametrize(
    "spec",
    [
        SampleSpec(temperature=1.0),
        SampleSpec(temperature=0.5, top_k=3),
        SampleSpec(temperature=1.3, top_p=0.7),
        SampleSpec(temperature=1.0, min_p=0.3),
        SampleSpec(temperature=0.8, top_k=4, top_p=0.9, min_p=0.1),
    ],
)
def test_sampler_draws_the_target_distribution(spec):
    logits = np.array([2.0, 1.5, 1.4, 0.3, -0.5, -3.0, 0.9], dtype=np.float32)
    target = _target(logits, spec)
    B = 40_000
    u = torch.from_numpy(np.random.default_rng(1).random(B))
    toks = sample_tokens(torch.from_numpy(np.tile(logits, (B, 1))), spec, u).numpy()
    freq = np.bincount(toks, minlength=len(logits)) / B
    assert np.all(freq[target == 0] == 0), (freq, target)
    np.testing.assert_allclose(freq, target, atol=0.012)
    assert target.max() < 1  # the case is not degenerate


def test_sampler_greedy_and_uniform_edges():
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 0.0]])
    assert sample_tokens(logits, SampleSpec(temperature=0), torch.zeros(2)).tolist() == [1, 0]
    spec = SampleSpec(temperature=1.0, top_k=1)
    top = sample_tokens(logits, spec, torch.tensor([1.0 - 2**-53, 0.0], dtype=torch.float64))
    assert top.tolist() == [1, 0]  # u at the top edge stays on a kept token
    under = torch.tensor([[0.0, -1e4, -1e4]] * 2)  # softmax underflows to exact zeros
    assert sample_tokens(
        under, SampleSpec(temperature=1.0), torch.tensor([1.0 - 2**-53, 0.5], dtype=torch.float64)
    ).tolist() == [0, 0]


def test_step_uniforms_are_per_sequence_streams():
    u = step_uniforms([1, 2, 3], 0)
    assert u.shape == (3,) and np.all((u >= 0) & (u < 1)) and len(set(u)) == 3
    assert step_uniforms([2], 0)[0] == u[1]  # independent of the rest of the batch
    assert step_uniforms([1, 2, 3], 1)[0] != u[0]
    many = step_uniforms(np.arange(100_000), 7)
    assert abs(many.mean() - 0.5) < 0.005 and abs(np.mean(many < 0.1) - 0.1) < 0.005


# -------------------------------------------------------------------- engine


def test_n_per_prompt_in_order_with_exact_logprobs(tiny):
    spec = SampleSpec(n=3, temperature=1.0, max_tokens=10, seed=4)
    out = tiny.generate(PROMPTS, spec)
    assert [len(r) for r in out] == [3, 3, 3]
    for p, row in zip(PROMPTS, out):
        P = len(tiny.tokenize(p))
        assert len({c.token_ids for c in row}) == 3
        for j, c in enumerate(row):
            assert c.seed == spec.sequence_seed(prompt_key(p), j)
            assert c.prompt_tokens == P and c.cached_prompt_tokens == (0 if j == 0 else P)
            assert c.finish_reason in ("stop", "length") and 1 <= len(c.token_ids) <= 10
            if c.finish_reason == "length":
                assert len(c.token_ids) == 10
            # the expanded, left-padded KV cache gives the logits of a fresh forward
            assert c.logprob == pytest.approx(_ref_logprob(tiny, p, c.token_ids), abs=1e-3)
    st = tiny.stats
    assert st.prompt_tokens_cached > 0 and st.prompts_encoded >= 3


def test_greedy_equals_model_generate(tiny):
    prompt = "The quick brown fox"
    (c,) = tiny.generate([prompt], SampleSpec(temperature=0, max_tokens=12))[0]
    ids = torch.tensor([tiny.tokenize(prompt)])
    with torch.no_grad():
        ref = tiny.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=12,
            pad_token_id=tiny.tokenizer.pad_token_id,
        )
    assert list(c.token_ids) == ref[0, ids.shape[1] :].tolist()


def test_same_completions_whatever_the_batch(tiny):
    spec = SampleSpec(n=3, temperature=1.0, max_tokens=8, seed=9)
    full = tiny.generate(PROMPTS, spec)
    alone = tiny.generate([PROMPTS[1]], spec)
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in full[1]]
    later = tiny.generate([PROMPTS[0]], SampleSpec(n=2, temperature=1.0, max_tokens=8, seed=9, first_index=1))
    assert [c.token_ids for c in later[0]] == [c.token_ids for c in full[0][1:]]
    small = HFBackend.from_model(tiny.model, tiny.tokenizer, max_seqs=2)  # prompts straddle chunks
    chunked = small.generate(PROMPTS, spec)
    assert [[c.token_ids for c in r] for r in chunked] == [[c.token_ids for c in r] for r in full]
    assert small.stats.prompts_encoded == 6  # chunks of 2 of 9 sequences: (0,0) (0,1) (1,1) (2,2) (2)


def test_stop_strings_and_eos(tiny):
    spec = SampleSpec(n=2, temperature=1.0, max_tokens=16, seed=3)
    (free,) = tiny.generate(["stop test"], spec)
    c = free[1]
    assert len(c.text) >= 6
    s = c.text[3:5]
    (cut,) = tiny.generate(["stop test"], SampleSpec(n=2, temperature=1.0, max_tokens=16, seed=3, stop=(s,)))
    k = c.text.find(s)
    assert cut[1].text == c.text[:k] and cut[1].finish_reason == "stop"
    assert cut[1].token_ids == c.token_ids[: len(cut[1].token_ids)] and len(cut[1].token_ids) < len(c.token_ids)

    t = c.token_ids[2]
    eos = HFBackend.from_model(tiny.model, tiny.tokenizer)
    eos.eos_ids = frozenset({t})
    (ended,) = eos.generate(["stop test"], spec)
    first = c.token_ids.index(t)
    assert ended[1].finish_reason == "stop" and ended[1].token_ids == c.token_ids[: first + 1]
    assert ended[1].text == tiny.tokenizer.decode(list(c.token_ids[:first]))


class FakeOOMModel(torch.nn.Module):
    """Wraps a model; a forward over more than ``limit`` rows (or a prompt of ``deny`` tokens) runs out of memory."""

    def __init__(self, model, limit: int, deny: int = -1):
        super().__init__()
        self.inner, self.limit, self.deny, self.config = model, limit, deny, model.config
        self.generation_config = model.generation_config

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True, logits_to_keep=0):
        if input_ids.shape[0] > self.limit or input_ids.shape[1] == self.deny:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
        )


def test_out_of_memory_halves_the_chunk(tiny):
    spec = SampleSpec(n=3, temperature=1.0, max_tokens=6, seed=2)
    ref = tiny.generate(PROMPTS, spec)
    b = HFBackend.from_model(FakeOOMModel(tiny.model, limit=2), tiny.tokenizer, max_seqs=16)
    out = b.generate(PROMPTS, spec)
    assert b.max_seqs == 2 and b.stats.oom_retries == 2  # 9 -> 4 -> 2 sequences per chunk
    assert [[c.token_ids for c in r] for r in out] == [[c.token_ids for c in r] for r in ref]
    deny = len(tiny.tokenize("x" * 7))
    b = HFBackend.from_model(FakeOOMModel(tiny.model, limit=1, deny=deny), tiny.tokenizer, max_seqs=1)
    out = b.generate(["x" * 7, "y"], SampleSpec(n=1, temperature=0, max_tokens=3))
    assert (
        out[0][0].finish_reason == "error" and "out of memory with one sequence of 7 prompt tokens" in out[0][0].error
    )
    assert out[1][0].error is None and len(out[1][0].token_ids) == 3


def test_context_limits(tiny):
    with pytest.raises(
        MarginalError, match=r"prompt 1 has 130 tokens, which leaves no room to generate in the model's context of 128"
    ):
        tiny.generate(["ok", "y" * 130], SampleSpec(max_tokens=4, temperature=0))
    (c,) = tiny.generate(["y" * 124], SampleSpec(max_tokens=16, temperature=0))[0]
    assert c.finish_reason in ("length", "stop") and len(c.token_ids) <= 4
    if c.finish_reason == "length":
        assert len(c.token_ids) == 4


def test_bad_settings(tmp_path):
    with pytest.raises(MarginalError, match="model file not found"):
        HFBackend(tmp_path / "missing.gguf")
    with pytest.raises(MarginalError, match="dtype must be one of bfloat16, float16, float32, got 'int3'"):
        HFBackend(tmp_path, dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(MarginalError, match="torch sees no CUDA GPU"):
            HFBackend(tmp_path, device="cuda")
    with pytest.raises(MarginalError, match="transformers could not load model"):
        HFBackend(tmp_path)  # an empty directory


@pytest.mark.slow
def test_bundled_gguf_through_transformers(smol_path, smol):
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package")
    pytest.importorskip("accelerate", reason="transformers loads GGUF files with accelerate")
    b = HFBackend(smol_path)
    assert b.has_chat_template and b.name.endswith(".gguf")
    chat = Chat((Message("user", "What is the capital of France?"),))
    # the same prompt tokens as llama.cpp's own template and tokenizer
    assert b.tokenize(chat) == smol.tokenize(chat)
    (g,) = b.generate([chat], SampleSpec(temperature=0, max_tokens=12))[0]
    (ref,) = smol.generate([chat], SampleSpec(temperature=0, max_tokens=12))[0]
    assert "Paris" in g.text
    # de-quantized weights in float32 vs llama.cpp's quantized kernels: close logits, not equal ones
    # (here the two top first tokens are 0.08 nats apart and the engines pick different ones)
    with torch.no_grad():
        first = torch.log_softmax(b.model(input_ids=torch.tensor([b.tokenize(chat)])).logits[0, -1].float(), -1)
    assert first[g.token_ids[0]] == first.max()
    assert first.max() - first[ref.token_ids[0]] < 0.5
    out = b.generate([chat, "2 + 2 ="], SampleSpec(n=2, temperature=0.8, max_tokens=8, seed=1))
    assert [len(r) for r in out] == [2, 2] and all(c.error is None and c.token_ids for r in out for c in r)


def test_gpu_check_script_runs_tiny(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    out = tmp_path / "g.json"
    r = subprocess.run(
        [sys.executable, str(script), "--tiny", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {x["engine"] for x in rows} == {"generate_1", "marginal", "generate_nrs"}
    assert all(x["tokens"] == x["sequences"] * 8 and x["tok_s"] > 0 for x in rows)  # no EOS: full length each
    assert "vs generate" in r.stdout
