"""Token-level blending: the mixing rule by hand, and BlendBackend on the real
bundled SmolLM2-135M (paired with itself; a guide that sees another system
prompt makes the guide's distribution differ from the base's)."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from marginal.blend import (
    BlendBackend,
    BlendCompletion,
    BlendConfig,
    LlamaCppEngine,
    StringVocab,
    alpha_for,
    auto_alpha,
    check_pair,
    mix,
    parse_blend_spec,
    union_by_id,
    union_by_string,
    variant_config,
)
from marginal.blend.decode import resync
from marginal.blend.mix import EOG, filtered, sample
from marginal.errors import MarginalError
from marginal.types import Chat, Message, SampleSpec

MAX = 12


def lp(ps):
    return np.log(np.asarray(ps, dtype=np.float64)).astype(np.float32)


# ----------------------------------------------------------------- the rule


def test_union_by_id_auto_alpha_linear_by_hand():
    pb = [0.35, 0.30, 0.20, 0.10, 0.05]
    pg = [0.10, 0.05, 0.60, 0.20, 0.05]
    c = union_by_id(lp(pb), lp(pg), k=2)
    assert c.base_ids.tolist() == [0, 1, 2, 3]  # base top-2, then the guide's top-2 not already there
    assert c.topk_overlap == 0.0
    assert c.guide_top == 2
    np.testing.assert_allclose(c.pb, [0.35, 0.30, 0.20, 0.10], rtol=1e-6)
    np.testing.assert_allclose(c.pg, [0.10, 0.05, 0.60, 0.20], rtol=1e-6)
    a = alpha_for(c, "auto")
    assert a == pytest.approx(0.60 / (0.35 + 0.60) + 0.1 * 0.20, rel=1e-6)
    p = mix(c.pb, c.pg, a)
    raw = [a * g + (1 - a) * b for b, g in zip([0.35, 0.30, 0.20, 0.10], [0.10, 0.05, 0.60, 0.20])]
    np.testing.assert_allclose(p, np.array(raw) / sum(raw), rtol=1e-6)
    assert int(np.argmax(p)) == 2  # the guide's token wins at this alpha


def test_fixed_alpha_and_geometric_by_hand():
    pb, pg = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    c = union_by_id(lp(pb), lp(pg), k=3)
    assert c.topk_overlap == 1.0 and alpha_for(c, 0.25) == 0.25
    lin = mix(c.pb, c.pg, 0.25)
    np.testing.assert_allclose(lin, 0.25 * pg + 0.75 * pb, rtol=1e-6)
    geo = mix(c.pb, c.pg, 0.25, "geometric")
    raw = pg**0.25 * pb**0.75
    np.testing.assert_allclose(geo, raw / raw.sum(), rtol=1e-6)
    assert mix(c.pb, c.pg, 1.0).argmax() == 2 and mix(c.pb, c.pg, 0.0).argmax() == 0
    with pytest.raises(ValueError, match="combine"):
        mix(c.pb, c.pg, 0.5, "harmonic")  # type: ignore[arg-type]


def test_auto_alpha_is_clipped():
    assert auto_alpha(0.0, 1.0, 1.0) == 1.0  # 1 + 0.1 clipped
    assert auto_alpha(0.3, 0.1, 0.0) == pytest.approx(0.25)


def test_union_by_string_by_hand():
    # base: "a" "b" "c" <ctl> <eos>;  guide: "b" "a" "d" <eos> "c" "a"(dup)
    vb = StringVocab.build([b"a", b"b", b"c", b"", b""], [False, False, False, False, True])
    vg = StringVocab.build([b"b", b"a", b"d", b"", b"c", b"a"], [False, False, False, True, False, False])
    assert vb.keys == (b"a", b"b", b"c", None, EOG)
    assert vg.tokens[b"a"] == (1, 5)
    pb = [0.40, 0.05, 0.05, 0.20, 0.30]
    pg = [0.05, 0.10, 0.50, 0.25, 0.05, 0.05]
    c = union_by_string(lp(pb), lp(pg), 3, vb, vg)
    # base top-3: a(.40) eos(.30) ctl(.20, no key: skipped); guide top-3: d(.50) eos(.25) a(.10)
    assert c.keys == (b"a", EOG, b"d")
    assert c.base_ids.tolist() == [0, 4, -1]
    assert c.guide_ids.tolist() == [1, 3, 2]  # "a": the likelier of the guide's two "a" tokens
    np.testing.assert_allclose(c.pb, [0.40, 0.30, 0.0], rtol=1e-6)
    np.testing.assert_allclose(c.pg, [0.15, 0.25, 0.50], rtol=1e-6)  # "a" sums both guide tokens
    assert c.guide_top == 2 and c.topk_overlap == pytest.approx(2 / 3)
    c4 = union_by_string(lp(pb), lp(pg), 4, vb, vg)  # base top-4 adds "b" (tie with "c": lower id first)
    assert c4.keys == (b"a", EOG, b"b", b"d") and c4.base_ids.tolist() == [0, 4, 1, -1]
    np.testing.assert_allclose([c4.pb[2], c4.pg[2]], [0.05, 0.05], rtol=1e-6)
    a = alpha_for(c, "auto")
    assert a == pytest.approx(0.50 / (0.40 + 0.50) + 0.1 * 0.0, rel=1e-6)
    p = mix(c.pb, c.pg, a)
    raw = a * c.pg + (1 - a) * c.pb
    np.testing.assert_allclose(p, raw / raw.sum())
    # geometric: "d" has no base token, so it can only win with alpha = 1
    geo = mix(c.pb, c.pg, 0.9, "geometric")
    assert geo[2] == 0.0 and geo.sum() == pytest.approx(1.0)
    assert mix(c.pb, c.pg, 1.0, "geometric").argmax() == 2


def test_filtered_and_sample():
    p = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(filtered(p, 1.0, top_k=2), [0.625, 0.375, 0.0])
    np.testing.assert_allclose(filtered(p, 1.0, top_p=0.7), [0.625, 0.375, 0.0])
    np.testing.assert_allclose(filtered(p, 1.0, min_p=0.5), [0.625, 0.375, 0.0])
    t = filtered(p, 0.5)
    np.testing.assert_allclose(t, p**2 / (p**2).sum())
    assert sample(p, np.random.default_rng(0), 0.0) == 0
    rng = np.random.default_rng(1)
    draws = np.bincount([sample(p, rng, 1.0) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(draws, p, atol=0.03)


def test_config_validation_and_variants():
    with pytest.raises(MarginalError, match="gamma"):
        BlendConfig(gamma=-1)
    with pytest.raises(MarginalError, match="alpha"):
        BlendConfig(alpha=1.5)
    with pytest.raises(MarginalError, match="top_k"):
        BlendConfig(top_k=0)
    with pytest.raises(MarginalError, match="did you mean 'nudge'"):
        variant_config("nudg")
    assert variant_config("always", gamma=0.2).gamma == 1.0
    assert variant_config("nudge").alpha == 1.0
    assert variant_config("alpha0.25").alpha == 0.25
    assert variant_config("geometric").combine == "geometric"
    assert variant_config("guide").solo == "guide"


class FakeKV:
    """Records what `resync` does to a sequence."""

    def __init__(self):
        self.cut = None

    def truncate(self, sid, n):
        self.cut = n


def test_resync_keeps_common_prefix():
    e = FakeKV()
    assert resync(e, 0, [9, 9], None, [1, 2]) == [9, 9, 1, 2]  # fresh: prompt and text
    assert resync(e, 0, [9], [1, 2], [1, 2]) == [] and e.cut is None  # nothing changed
    assert resync(e, 0, [9], [1, 2], [1, 2, 3]) == [3] and e.cut == 3
    assert resync(e, 0, [9], [1, 2, 3], [1, 4]) == [4] and e.cut == 2  # merged: re-evaluate from the change
    assert resync(e, 0, [9], [1, 2, 3], [1, 2]) == [2] and e.cut == 2  # a strict prefix: refeed its last token
    assert resync(e, 0, [9], [1], []) == [9] and e.cut == 0


# --------------------------------------------------------- the real model


class SystemPromptEngine:
    """A real engine whose chat prompts get a system message (a guide with its own prompt format)."""

    def __init__(self, engine, system):
        self._e, self._system = engine, system
        self.name = engine.name + "+sys"

    def tokenize(self, prompt):
        if isinstance(prompt, Chat):
            prompt = Chat((Message("system", self._system), *prompt.messages))
        return self._e.tokenize(prompt)

    def __getattr__(self, attr):
        return getattr(self._e, attr)


@pytest.fixture(scope="module")
def engines(smol_path):
    b = LlamaCppEngine.load(str(smol_path), n_ctx=1024, max_seqs=4, n_threads=2)
    g = LlamaCppEngine.load(str(smol_path), n_ctx=1024, max_seqs=4, n_threads=2)
    yield b, g
    b.close()
    g.close()


@pytest.fixture(scope="module")
def pair(engines):
    b, g = engines
    return BlendBackend(b, SystemPromptEngine(g, "You are a pirate. Always answer like a pirate."))


PROMPTS = [Chat((Message("user", "Name a color of the sky."),))]
GREEDY = SampleSpec(temperature=0, max_tokens=MAX)


def test_engine_catch_up_equals_fresh_evaluation(engines):
    e, _ = engines
    prompt = e.tokenize(PROMPTS[0])
    text = e.tokenize_text(" The sky is blue on a clear day")
    a, b = e.open(2)
    try:
        e.extend([a], [prompt])
        e.extend([a], [text[:1]])
        caught = e.extend([a], [text[1:]])[0]  # catch-up: several tokens in one batch
        fresh = e.extend([b], [prompt + text])[0]
        assert int(caught.argmax()) == int(fresh.argmax())
        np.testing.assert_allclose(caught, fresh, atol=2e-2)
        np.testing.assert_allclose(np.exp(caught.astype(np.float64)).sum(), 1.0, rtol=1e-4)
        # truncate + refeed (re-tokenization) gives the same row again
        e.truncate(a, len(prompt) + 2)
        assert e.length(a) == len(prompt) + 2
        again = e.extend([a], [text[2:]])[0]
        np.testing.assert_allclose(again, fresh, atol=2e-2)
    finally:
        e.release([a, b])


def test_gamma_zero_never_intervenes_and_equals_the_base(pair, smol):
    b = pair.with_config(BlendConfig(gamma=0.0))
    b.reset_stats()
    (c,) = b.generate(PROMPTS, GREEDY)[0:1][0]
    assert isinstance(c, BlendCompletion)
    assert c.interventions == 0 and c.steps == c.completion_tokens > 0
    assert b.stats.guide_tokens == 0 and b.stats.guide_calls == 0
    (ref,) = smol.generate(PROMPTS, GREEDY)[0]
    assert c.token_ids == ref.token_ids and c.text == ref.text
    assert c.logprob == pytest.approx(ref.logprob, abs=1e-3)
    base_alone = pair.with_config(variant_config("base")).generate(PROMPTS, GREEDY)[0][0]
    assert base_alone.token_ids == c.token_ids


def test_gamma_above_one_always_intervenes_and_alpha_one_equals_the_guide(pair):
    b = pair.with_config(BlendConfig(gamma=1.5, alpha=1.0))
    b.reset_stats()
    (c,) = b.generate(PROMPTS, GREEDY)[0]
    assert c.interventions == c.steps == c.completion_tokens and c.intervention_rate == 1.0
    assert c.mean_alpha == 1.0 and 0 <= c.topk_overlap <= 1
    guide = pair.with_config(variant_config("guide")).generate(PROMPTS, GREEDY)[0][0]
    base = pair.with_config(variant_config("base")).generate(PROMPTS, GREEDY)[0][0]
    assert guide.token_ids != base.token_ids  # the guide's own prompt makes it a different model here
    assert c.token_ids == guide.token_ids and c.text == guide.text
    assert b.stats.guide_calls == c.steps  # the guide caught up one token per step


def test_guide_work_only_at_interventions(pair):
    """With gamma between, the guide evaluates its prompt once and catches up only when asked."""
    b = pair.with_config(BlendConfig(gamma=0.6))
    b.reset_stats()
    (c,) = b.generate(PROMPTS, GREEDY)[0]
    st = b.stats
    assert 0 < c.interventions < c.steps, "gamma 0.6 should give some but not all interventions"
    assert st.guide_calls == c.interventions
    assert st.guide_tokens < len(pair.guide.tokenize(PROMPTS[0])) + c.steps
    assert not math.isnan(c.mean_alpha) and 0 <= c.mean_alpha <= 1
    assert c.intervention_rate == pytest.approx(c.interventions / c.steps)


def test_string_matching_on_a_shared_vocabulary_equals_id_matching(engines):
    b, g = engines
    by_str = BlendBackend(b, g, BlendConfig(gamma=0.6), match="string")
    by_id = BlendBackend(b, g, BlendConfig(gamma=0.6), match="id")
    assert by_str.match == "string" and by_id.match == "id"
    s = by_str.generate(PROMPTS, GREEDY)[0][0]
    i = by_id.generate(PROMPTS, GREEDY)[0][0]
    assert s.text == i.text and s.interventions == i.interventions > 0
    assert s.retokenized == 0  # every chosen string is one base token


def test_sampling_is_seeded_and_siblings_share_the_prompt(pair):
    b = pair.with_config(BlendConfig(gamma=0.6))
    spec = SampleSpec(n=3, temperature=1.0, max_tokens=MAX, seed=7)
    one = b.generate(PROMPTS, spec)[0]
    two = b.generate(PROMPTS, spec)[0]
    assert [c.text for c in one] == [c.text for c in two]
    assert len({c.text for c in one}) > 1
    assert [c.cached_prompt_tokens > 0 for c in one] == [False, True, True]
    assert all(math.isfinite(c.logprob) and c.logprob < 0 for c in one)


class ShiftedVocab:
    """A real engine that claims a different vocabulary (for pair checks only)."""

    def __init__(self, engine, n_vocab=None, eog=None, n_ctx_train=None):
        self._e = engine
        self.name = "fake-" + engine.name
        self.n_vocab = n_vocab or engine.n_vocab
        self.n_ctx_train = n_ctx_train or engine.n_ctx_train
        self._eog = eog

    def is_eog(self, t):
        return self._eog(t) if self._eog else self._e.is_eog(t)

    def piece(self, t):
        return self._e.piece(t) if t < self._e.n_vocab else b"<extra>"

    def __getattr__(self, attr):
        return getattr(self._e, attr)


def test_incompatible_pairs_give_clear_errors(engines):
    b, g = engines
    with pytest.raises(MarginalError, match="match='id' needs the same vocabulary.*49152 vs 49153 tokens"):
        check_pair(b, ShiftedVocab(g, n_vocab=b.n_vocab + 1), "id")
    assert check_pair(b, ShiftedVocab(g, n_vocab=b.n_vocab + 1)) == "string"  # auto falls back
    with pytest.raises(MarginalError, match="not their end-of-generation tokens"):
        check_pair(b, ShiftedVocab(g, eog=lambda t: t == 0))
    with pytest.raises(MarginalError, match="no end-of-generation token"):
        check_pair(b, ShiftedVocab(g, n_vocab=b.n_vocab + 1, eog=lambda t: False))
    with pytest.raises(MarginalError, match="n_ctx=1024 exceeds the model's training context 512"):
        check_pair(b, ShiftedVocab(g, n_ctx_train=512))
    with pytest.raises(MarginalError, match="match must be"):
        check_pair(b, g, "bytes")  # type: ignore[arg-type]


def test_prompt_too_long_for_the_guide_is_an_error_completion(smol_path, engines):
    b, _ = engines
    small = LlamaCppEngine.load(str(smol_path), n_ctx=64, max_seqs=2, n_threads=2)
    try:
        pair = BlendBackend(b, small, BlendConfig(gamma=0.5))
        long = Chat((Message("user", "Tell me about the sky. " * 60),))
        bad, good = pair.generate([long, PROMPTS[0]], GREEDY)
        assert bad[0].finish_reason == "error"
        assert "for guide" in bad[0].error and f"context of {small.n_ctx} tokens" in bad[0].error
        assert good[0].finish_reason in ("stop", "length") and good[0].error is None
    finally:
        small.close()


def test_blend_cli(tmp_path, smol_path):
    from typer.testing import CliRunner

    from marginal.cli import app

    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "What is 4 + 4?", "answer": "8"}\n')
    db = tmp_path / "b.db"
    args = [
        "blend",
        f"jsonl:{data}",
        "--base",
        str(smol_path),
        "--guide",
        str(smol_path),
        "-v",
        "base",
        "-v",
        "always",
        "--limit",
        "2",
        "--max-tokens",
        "8",
        "--out",
        str(db),
        "--n-ctx",
        "1024",
        "--max-seqs",
        "2",
        "--threads",
        "2",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "rate" in r.output and "always" in r.output
    db_rows = (
        sqlite3.connect(db)
        .execute(
            "SELECT r.config, s.completion_tokens, s.interventions, s.intervention_rate, s.mean_alpha, s.topk_overlap "
            "FROM samples s JOIN runs r USING (run_id) ORDER BY r.config"
        )
        .fetchall()
    )
    assert len(db_rows) == 4  # 2 variants x 2 problems, one run each in one file
    for cfg, tokens, inter, rate, ma, ov in db_rows:
        if "variant=base" in cfg:
            assert inter == 0 and rate == 0 and ma is None and ov is None
        else:
            assert "variant=always" in cfg and inter == tokens > 0 and rate == 1.0 and 0 <= ma <= 1 and 0 <= ov <= 1
    # A rerun generates nothing; a gamma sweep adds only the runs whose settings differ.
    r = CliRunner().invoke(app, [*args, "-v", "blend", "--gamma", "0.4", "--gamma", "0.9"])
    assert r.exit_code == 0, r.output
    from marginal.analysis.blend import blend_rows

    rows = blend_rows(db)
    assert [(x.variant, x.gamma) for x in rows] == [("base", 0.4), ("always", 1.0), ("blend", 0.4), ("blend", 0.9)]
    assert all(x.samples == 2 for x in rows)
    # analyze tabulates a file of runs side by side; report plots them.
    r = CliRunner().invoke(app, ["analyze", str(db), "--json", str(tmp_path / "a.json")])
    assert r.exit_code == 0, r.output
    assert "4 blended runs" in r.output and "rate" in r.output
    import json

    assert len(json.loads((tmp_path / "a.json").read_text())["blend"]) == 4
    r = CliRunner().invoke(app, ["report", str(db), "--html", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "Blending: accuracy against intervention rate" in (tmp_path / "r.html").read_text()
    # One blended run analysed in full keeps its diagnostics.
    r = CliRunner().invoke(app, ["analyze", str(db), "--run", rows[1].run_id])
    assert r.exit_code == 0, r.output
    assert "always" in r.output and "accuracy" in r.output
    r2 = CliRunner().invoke(app, [*args[:-2], "--alpha", "1.5"])
    assert r2.exit_code != 0 and "--alpha must be" in str(r2.exception or r2.output)
    r3 = CliRunner().invoke(app, [*args, "--prior", "defualt"])
    assert r3.exit_code != 0 and "unknown prior 'defualt' (did you mean 'default'?)" in str(r3.exception)
    r4 = CliRunner().invoke(app, [*args, "--samples", "3"])
    assert r4.exit_code != 0 and "--mode sample" in str(r4.exception)


def test_backend_protocol(pair):
    from marginal.backends.base import Backend

    assert isinstance(pair, Backend)
    assert pair.name.startswith("blend:") and pair.name.endswith("+sys:g0.4-aauto-k100")


@pytest.mark.skipif(
    not __import__("os").environ.get("MARGINAL_SLOW_TESTS"),
    reason="set MARGINAL_SLOW_TESTS=1: a real different-tokenizer pair (Qwen2.5-Coder-0.5B guide)",
)
def test_different_tokenizers_on_real_models(engines):
    from marginal.models import CATALOG, is_available

    if not is_available(CATALOG["qwen2.5-coder-0.5b"]):
        pytest.skip("qwen2.5-coder-0.5b is not installed")
    b, _ = engines
    q = LlamaCppEngine.load("qwen2.5-coder-0.5b", n_ctx=1024, max_seqs=4, n_threads=2)
    try:
        pair = BlendBackend(b, q, BlendConfig(gamma=1.5, alpha=0.9))
        assert pair.match == "string"
        prompts = [Chat((Message("user", "Write a Python function that adds two numbers."),)), "def fib(n):"]
        for (c,) in pair.generate(prompts, SampleSpec(temperature=0, max_tokens=24)):
            assert c.interventions == c.steps > 0 and c.error is None
            assert b.detokenize(c.token_ids).startswith(c.text)  # token_ids are the base's tokens of the text
        # the guide's catch-up after re-tokenization equals a fresh evaluation of prompt + text
        prompt = q.tokenize(prompts[1])
        text = q.tokenize_text("    if n < 2:\n        return n")
        x, y = q.open(2)
        q.extend([x], [prompt + text[:3]])
        got = q.extend([x], [text[3:]])[0]
        fresh = q.extend([y], [prompt + text])[0]
        assert int(got.argmax()) == int(fresh.argmax())
        # Q4_K_M numerics depend on the batch shape: far-tail log-probs move by ~0.06, probabilities barely
        np.testing.assert_allclose(np.exp(got), np.exp(fresh), atol=1e-2)
        assert set(np.argsort(-got)[:5]) == set(np.argsort(-fresh)[:5])
        q.release([x, y])
    finally:
        q.close()


def test_parse_blend_spec():
    base, guide, cfg, match = parse_blend_spec("blend:qwen2.5-coder-1.5b+qwen2.5-coder-0.5b:gamma=0.3,alpha=0.5")
    assert (base, guide, match) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "auto")
    assert cfg == BlendConfig(gamma=0.3, alpha=0.5)
    assert parse_blend_spec("blend:a+b:variant=always,match=id")[2:] == (BlendConfig(gamma=1.0), "id")
    for bad, msg in [
        ("blend:a", "expected 'blend:BASE"),
        ("blend:a+b:beta=1", "bad option 'beta=1'"),
        ("blend:a+b:gamma=x", "must be numbers"),
        ("blend:a+b:variant=mix", "unknown blend variant"),
        ("blend:a+b:match=bytes", "match must be"),
    ]:
        with pytest.raises(MarginalError, match=msg):
            parse_blend_spec(bad)


def test_format_blend_spec_round_trips():
    from marginal.blend import VARIANTS, blend_variant, format_blend_spec, variant_config

    for v in VARIANTS:
        for g in (0.2, 0.4):
            cfg = variant_config(v, gamma=g, alpha="auto")
            spec = format_blend_spec("a", "b", v, cfg, "id")
            base, guide, parsed, match = parse_blend_spec(spec)
            assert (base, guide, match, blend_variant(spec)) == ("a", "b", "id", v)
            assert parsed == (variant_config(v) if cfg.solo else cfg)  # solo variants ignore gamma
    assert blend_variant("blend:a+b") == "blend"
