"""The vLLM backend.

Unit tests run against ``tests/fake_vllm.py`` (a fake ``vllm`` module in
``sys.modules`` that records the engine arguments and every ``generate``
call, and answers with a deterministic function of (prompt ids, seed)). The
real test at the end runs the bundled SmolLM2 GGUF through
``load_backend('vllm:...')`` and is skipped where vLLM cannot run (not
installed, or no CUDA GPU).
"""

from __future__ import annotations

import sys

import fake_vllm
import pytest
from fake_vllm import BLOCK, fake_tokens

from marginal.backends import Backend, load_backend
from marginal.backends.hf import render_plain
from marginal.errors import MarginalError
from marginal.types import Chat, Message, SampleSpec, prompt_key

LONG = " ".join(f"word{k}" for k in range(20))  # 21 tokens with BOS: one full 16-token block
CHAT = Chat((Message("system", "be brief"), Message("user", "what is two plus two")))
PROMPTS = [LONG, CHAT, "hi"]


@pytest.fixture
def fake(monkeypatch):
    return fake_vllm.install(monkeypatch)


def _backend(**kw):
    return load_backend("vllm:org/model", **kw)


def _llm(b):
    return b._llm


def test_engine_built_with_prefix_caching_seed_and_options(fake):
    b = _backend(seed=7, max_model_len=48, tokenizer="org/tok", gpu_memory_utilization=0.5, n_threads=2, n_ctx=999)
    assert isinstance(b, Backend)
    assert b.name == "vllm:org/model"
    (llm,) = fake.LLM.instances
    assert llm.kwargs == dict(
        model="org/model",
        enable_prefix_caching=True,
        seed=7,
        tokenizer="org/tok",
        max_model_len=48,
        gpu_memory_utilization=0.5,
    )  # llama.cpp options dropped
    assert b.max_model_len == 48


def test_prefix_caching_cannot_be_turned_off(fake):
    with pytest.raises(MarginalError, match="prefix caching"):
        _backend(enable_prefix_caching=False)


def test_one_generate_call_per_batch_with_one_request_per_sample(fake):
    b = _backend()
    spec = SampleSpec(n=3, temperature=0.8, max_tokens=10, seed=5)
    out = b.generate(PROMPTS, spec)
    llm = _llm(b)
    assert len(llm.calls) == 1 and b.calls == 1
    call = llm.calls[0]
    assert len(call.prompts) == len(PROMPTS) * 3
    assert all(p.n == 1 for p in call.params)
    # requests are (prompt, j) in input order, each with its own marginal seed
    expected = [(b.tokenize(p), spec.sequence_seed(prompt_key(p), j)) for p in PROMPTS for j in range(3)]
    assert [(r["prompt_token_ids"], p.seed) for r, p in zip(call.prompts, call.params)] == expected
    assert len(set(p.seed for p in call.params)) == len(call.params)
    assert [len(row) for row in out] == [3, 3, 3]
    b.generate(["again"], SampleSpec(n=2))
    assert len(llm.calls) == 2


def test_submit_joins_vllms_running_engine_and_cancel_aborts(fake):
    from marginal.backends.streaming import Driver, Streaming, drain

    b = _backend()
    assert isinstance(b, Streaming)
    spec = SampleSpec(n=3, temperature=0.8, max_tokens=10, seed=5)
    want = b.generate(PROMPTS, spec)
    engine = _llm(b).llm_engine
    got = {}
    driver = Driver(lambda tag, comps: got.__setitem__(tag, comps))
    driver.submit(b, PROMPTS[0], spec, 0)
    b.step()  # the first request is running when the others arrive
    for i, p in enumerate(PROMPTS[1:], 1):
        driver.submit(b, p, spec, i)
    driver.run()

    def strip(rows):  # everything but the prefix-cache hits, which the first call warmed
        return [[(c.text, c.token_ids, c.seed, c.finish_reason, c.prompt_tokens) for c in r] for r in rows]

    assert strip([got[i] for i in range(len(PROMPTS))]) == strip(want)  # per-request seeds: the same completions
    assert engine.steps >= 3 and not b.step()
    f = b.submit(PROMPTS[0], spec)
    assert f.cancel() and not b.step() and len(engine.aborted) == 3
    assert drain(b, [b.submit("x " * 80, spec)])[0][0].finish_reason == "error"  # too long: fails alone


def test_empty_batch_makes_no_call(fake):
    b = _backend()
    assert b.generate([], SampleSpec(n=2)) == []
    assert _llm(b).calls == []


def test_sampling_settings_are_mapped(fake):
    b = _backend()
    b.generate(
        ["a b"], SampleSpec(n=2, temperature=1.3, top_p=0.9, top_k=0, min_p=0.05, max_tokens=17, stop=("w3", "\n\n"))
    )
    b.generate(["a b"], SampleSpec(n=1, temperature=0.0, top_k=40))
    p0, p1 = _llm(b).calls[0].params[0], _llm(b).calls[1].params[0]
    assert (p0.temperature, p0.top_p, p0.top_k, p0.min_p, p0.max_tokens, p0.stop, p0.logprobs) == (
        1.3,
        0.9,
        -1,
        0.05,
        17,
        ["w3", "\n\n"],
        0,
    )
    assert (p1.temperature, p1.top_k, p1.stop) == (0.0, 40, [])


def test_outputs_in_input_order_and_completion_fields(fake):
    b = _backend()
    spec = SampleSpec(n=4, max_tokens=5, seed=3)
    out = b.generate(PROMPTS, spec)
    tok = _llm(b).tokenizer
    for p, row in zip(PROMPTS, out):
        ids = b.tokenize(p)
        for j, c in enumerate(row):
            seed = spec.sequence_seed(prompt_key(p), j)
            toks, lps = fake_tokens(ids, seed, 5)
            assert c.seed == seed
            assert c.token_ids == tuple(toks)
            assert c.text == tok.decode(toks)
            assert c.logprob == pytest.approx(sum(lps))
            assert c.completion_tokens == len(toks)
            assert c.prompt_tokens == len(ids)
            assert c.finish_reason == ("stop" if toks[-1] == fake_vllm.EOS else "length")
            assert c.error is None
    reasons = {c.finish_reason for row in out for c in row}
    assert reasons == {"stop", "length"}  # both kinds occur in this batch


def test_cached_prompt_tokens_are_vllms_prefix_cache_hits(fake):
    b = _backend()
    out = b.generate([LONG, "hi"], SampleSpec(n=3, max_tokens=4))
    assert b.tokenize(LONG).__len__() == 21
    assert [c.cached_prompt_tokens for c in out[0]] == [0, BLOCK, BLOCK]  # full blocks only, after the first
    assert [c.cached_prompt_tokens for c in out[1]] == [0, 0, 0]  # shorter than a block


def test_per_sample_seeds_make_resume_equal_one_call(fake):
    b = _backend()
    whole = b.generate(PROMPTS, SampleSpec(n=4, seed=9, max_tokens=8))
    first = b.generate(PROMPTS, SampleSpec(n=2, seed=9, max_tokens=8))
    rest = b.generate(PROMPTS, SampleSpec(n=2, seed=9, max_tokens=8, first_index=2))
    for w, f, r in zip(whole, first, rest):
        assert [(c.seed, c.token_ids) for c in w] == [(c.seed, c.token_ids) for c in f + r]


def test_stop_string_and_other_finish_reasons(fake):
    b = _backend()
    spec = SampleSpec(n=6, max_tokens=12, seed=1)
    plain = b.generate(["a b c"], spec)[0]
    # a stop string: pick the 3rd word of completion 0 so the cut is visible
    words = plain[0].text.split()
    stop = words[2]
    cut = b.generate(["a b c"], SampleSpec(n=6, max_tokens=12, seed=1, stop=(stop,)))[0]
    c0 = cut[0]
    assert c0.finish_reason == "stop"
    assert c0.text == plain[0].text[: plain[0].text.find(stop)]
    assert c0.token_ids == plain[0].token_ids  # vLLM keeps the ids; only the text is cut
    # max_tokens=1 can never end with EOS in the fake: 'length' stays 'length'
    one = b.generate(["a b c"], SampleSpec(n=2, max_tokens=1))[0]
    assert [c.finish_reason for c in one] == ["length", "length"]
    # a reason marginal does not know becomes an error completion, the others are kept
    seed = spec.sequence_seed(prompt_key("a b c"), 1)
    type(_llm(b)).finish_override[seed] = "abort"
    again = b.generate(["a b c"], spec)[0]
    assert again[1].finish_reason == "error" and "abort" in again[1].error
    assert [c.finish_reason for k, c in enumerate(again) if k != 1] == [
        c.finish_reason for k, c in enumerate(plain) if k != 1
    ]


def test_too_long_prompt_gets_error_completions_only_for_itself(monkeypatch):
    fake = fake_vllm.install(monkeypatch, max_model_len=21)
    b = _backend()
    spec = SampleSpec(n=2, max_tokens=5, seed=2)
    out = b.generate(["short one", LONG, CHAT], spec)  # LONG is 21 tokens: no room left
    assert [c.finish_reason for c in out[1]] == ["error", "error"]
    assert all("21 tokens" in c.error and "max_model_len=21" in c.error for c in out[1])
    assert [c.seed for c in out[1]] == [spec.sequence_seed(prompt_key(LONG), j) for j in range(2)]
    assert all(c.finish_reason != "error" for c in out[0] + out[2])
    (call,) = _llm(b).calls
    assert len(call.prompts) == 4  # the long prompt was never sent (vLLM would fail the whole call)
    assert fake.LLM.instances


def test_all_prompts_too_long_makes_no_call(monkeypatch):
    fake_vllm.install(monkeypatch, max_model_len=4)
    b = _backend()
    out = b.generate([LONG], SampleSpec(n=2))
    assert [c.finish_reason for c in out[0]] == ["error", "error"]
    assert _llm(b).calls == []


def test_chat_template_failure_stays_with_its_prompt(fake):
    b = _backend()
    bad = Chat((Message("user", "please RAISE"),))
    out = b.generate(["fine", bad], SampleSpec(n=2, max_tokens=4))
    assert [c.finish_reason for c in out[1]] == ["error", "error"]
    assert "ValueError" in out[1][0].error
    assert all(c.finish_reason != "error" for c in out[0])


def test_chat_rendering(monkeypatch):
    fake_vllm.install(monkeypatch)
    b = _backend()
    text = b.render(CHAT)
    assert text.startswith("<s> <system> be brief") and text.endswith("<assistant>")
    assert b.tokenize(CHAT)[0] == fake_vllm.BOS  # written by the template, not added a second time
    assert b.tokenize(CHAT).count(fake_vllm.BOS) == 2
    assert b.tokenize("hi") == [fake_vllm.BOS, b.tokenizer.vocab["hi"]]
    fake_vllm.install(monkeypatch, chat_template=None)
    b2 = _backend()
    assert b2.render(CHAT) == render_plain(CHAT)


def test_rejected_sampling_settings_raise(fake):
    b = _backend()
    with pytest.raises(MarginalError, match="temperature must be in"):
        b.generate(["a"], SampleSpec(n=1, temperature=2.5))


def test_engine_validation_error_becomes_marginal_error(fake, monkeypatch):
    b = _backend()

    def boom(*a, **k):
        raise fake_vllm.VLLMClientError("bad request: something")

    monkeypatch.setattr(_llm(b), "generate", boom)
    with pytest.raises(MarginalError, match="vLLM rejected the batch: bad request"):
        b.generate(["a"], SampleSpec(n=1))


def test_vllm_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(MarginalError, match=r"pip install 'marginal\[vllm\]'"):
        _backend()


def test_no_supported_device(monkeypatch):
    fake_vllm.install(monkeypatch, unspecified=True)
    with pytest.raises(MarginalError, match="no device it supports.*no CUDA GPU"):
        _backend()


def test_model_that_cannot_load(fake):
    with pytest.raises(MarginalError, match="vLLM could not load model 'missing/model'"):
        load_backend("vllm:missing/model")
    with pytest.raises(MarginalError, match="model file not found"):
        load_backend("vllm:/nowhere/x.gguf")
    with pytest.raises(MarginalError, match="names no model"):
        load_backend("vllm:")


def test_catalog_name_resolves_to_the_gguf(fake, smol_path):
    b = load_backend("vllm:smollm2-135m")
    assert _llm(b).kwargs["model"] == str(smol_path)
    assert b.name == "vllm:smollm2-135m"


def test_from_llm_wraps_a_built_engine(fake):
    from marginal.backends.vllm import VLLMBackend

    llm = fake.LLM(model="org/m", enable_prefix_caching=True, max_model_len=40)
    b = VLLMBackend.from_llm(llm, name="mine")
    assert (b.name, b.max_model_len) == ("mine", 40)
    out = b.generate(["a b"], SampleSpec(n=2, max_tokens=3))
    assert len(llm.calls) == 1 and [len(r) for r in out] == [2]


def test_closed_backend_raises(fake):
    b = _backend()
    with b:
        pass
    with pytest.raises(MarginalError, match="closed"):
        b.generate(["a"], SampleSpec())


# ------------------------------------------------------------------ real vLLM


def _real_vllm():
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'marginal[vllm]')")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU here and torch sees none")
    return vllm


def test_real_vllm_on_the_bundled_gguf(smol_path):
    _real_vllm()
    b = load_backend("vllm:smollm2-135m", max_model_len=512, gpu_memory_utilization=0.3)
    try:
        spec = SampleSpec(n=3, temperature=0.8, max_tokens=16, seed=1)
        chat = Chat((Message("user", "What is 2 + 3? Answer with a number."),))
        out = b.generate([chat, "The capital of France is"], spec)
        assert [len(r) for r in out] == [3, 3]
        for row in out:
            assert all(c.finish_reason in ("stop", "length") and c.token_ids for c in row)
            assert all(c.logprob < 0 for c in row)
        again = b.generate([chat], spec)[0]
        assert [c.seed for c in again] == [c.seed for c in out[0]]
        P = again[0].prompt_tokens
        assert len(b.tokenize(chat)) == P and P >= 16  # at least one full 16-token KV block
        assert all(c.cached_prompt_tokens >= 16 for c in again)  # its full blocks were cached by the first call
    finally:
        b.close()


# ---------------------------------------------------------- bench/gpu_check.py


def test_gpu_check_vllm_path_on_the_fake(monkeypatch, tmp_path, capsys):
    """The script's vLLM path end to end (forced on CPU with the fake): the saved
    folder holds the weights and an id tokenizer that vLLM can load, and the
    rows come at the same sequence counts as the transformers path."""
    import importlib.util
    import json
    from pathlib import Path

    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    fake = fake_vllm.install(monkeypatch)
    seen = {}
    base_init = fake.LLM.__init__

    def init(self, **kw):
        folder = Path(kw["model"])
        tok = transformers.AutoTokenizer.from_pretrained(kw["tokenizer"])  # as vLLM loads it
        seen.update(
            files=sorted(p.name for p in folder.iterdir()),
            ids=tok("17 999 0")["input_ids"],
            kw=kw,
            text=tok.decode([17, 999, 0]),
        )
        base_init(self, **kw)

    monkeypatch.setattr(fake.LLM, "__init__", init)
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "g.json"
    assert mod.main(["--tiny", "--vllm", "on", "--skip-generate", "--out", str(out)]) == 0
    assert "config.json" in seen["files"] and "tokenizer" in seen["files"]
    assert seen["ids"] == [17, 999, 0] and seen["text"] == "17 999 0"  # one token per id, both ways
    assert seen["kw"]["enable_prefix_caching"] is True and seen["kw"]["max_model_len"] == 16 + 8 + 8
    res = json.loads(out.read_text())
    assert res["vllm"] == "0.0+fake" and res["vllm_skipped"] is None
    rows = {(r["engine"], r["sequences"]) for r in res["rows"]}
    assert rows == {("marginal", 4), ("marginal", 8), ("vllm", 4), ("vllm", 8)}
    assert all(r["tokens"] > 0 for r in res["rows"])
    (llm,) = fake.LLM.instances
    assert len(llm.calls) == 3  # warm-up + one call per size
    assert "vllm" in capsys.readouterr().out


def test_gpu_check_says_why_vllm_is_skipped(monkeypatch, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.setitem(sys.modules, "vllm", None)
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_under_test2", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--tiny", "--skip-generate", "--out", str(tmp_path / "g.json")]) == 0
    assert "vLLM skipped: vllm does not import" in capsys.readouterr().out
