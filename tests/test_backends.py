"""The backends' shared plumbing (marginal.backends.common), the engine table
behind load_backend, and the Engines cache; no model is loaded."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import marginal.backends as backends
from marginal.backends import ENGINES, Engines, engine_kind, engine_options, load_backend
from marginal.backends.common import (
    Counted,
    Counters,
    Lifecycle,
    check_prompt,
    error_completion,
    filled,
    find_stop,
    prepare_prompts,
    render_plain,
)
from marginal.backends.http import ServedCompletion
from marginal.errors import MarginalError
from marginal.types import Chat, Completion, Message, Prior, Sample, SampleSpec, prompt_key

# ----------------------------------------------------------------- plumbing


def test_check_prompt_names_the_prompt_its_length_and_the_limit():
    check_prompt(0, [1, 2], 3, context="c", hint="h")  # one token of room is enough
    with pytest.raises(MarginalError, match=r"^prompt 2 is empty after tokenization$"):
        check_prompt(2, [], 3, context="c", hint="h")
    with pytest.raises(
        MarginalError, match=r"^prompt 1 has 3 tokens, which leaves no room to generate in the ctx; go$"
    ):
        check_prompt(1, [1, 2, 3], 3, context="the ctx", hint="go")
    with pytest.raises(MarginalError, match=r"prompt 0 has 2 tokens for guide g, which leaves no room"):
        check_prompt(0, [1, 2], 3, context="c", hint="h", room=2, who=" for guide g")


def test_find_stop_against_brute_force():
    import itertools

    def brute(text, stops, start):
        hits = [k for s in stops for k in range(start, len(text)) if text.startswith(s, k)]
        return min(hits, default=-1)

    for text in ("", "ab", "abcab", "xx\n\nyy\n", "aaaa"):
        for stops in itertools.product(("a", "b", "\n\n", "ca", "zz"), repeat=2):
            for start in range(len(text) + 1):
                assert find_stop(text, stops, start) == brute(text, stops, start), (text, stops, start)


def test_error_completions_keep_their_type_and_seeds():
    c = error_completion("boom", 7, 3, ServedCompletion)
    assert isinstance(c, ServedCompletion) and (c.finish_reason, c.error, c.seed, c.prompt_tokens, c.n_tokens) == (
        "error",
        "boom",
        7,
        3,
        0,
    )
    spec = SampleSpec(n=3, seed=1)

    def prepare(i, prompt):
        if prompt == "bad":
            raise ValueError("no template")
        return [i]

    ready, results = prepare_prompts(["ok", "bad"], spec, prepare)
    assert ready == [[0], None] and results[0] == [None] * 3
    assert [c.error for c in results[1]] == ["ValueError: no template"] * 3
    assert [c.seed for c in results[1]] == [spec.sequence_seed(prompt_key("bad"), j) for j in range(3)]
    results[0] = [error_completion("x", 0)] * 3
    assert filled(results)[1] == results[1]


def test_render_plain():
    chat = Chat((Message("system", "S"), Message("user", "Q"), Message("assistant", "A"), Message("user", "R")))
    assert render_plain(chat) == "S\n\nUser: Q\n\nAssistant: A\n\nUser: R\n\nAssistant:"


def test_counters_and_lifecycle():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Stats:
        calls: int = 0
        seconds: float = 0.0

    class Thing(Counted[Stats], Lifecycle):
        def __init__(self):
            self._counters = Counters(Stats)
            self.closed = 0

        def close(self):
            self.closed += 1

    with Thing() as t:
        t._counters["calls"] += 2
        with t._counters.timed():
            pass
        assert t.stats.calls == 2 and t.stats.seconds > 0
        t.reset_stats()
        assert t.stats == Stats()
    assert t.closed == 1


# -------------------------------------------------------------- the table


def test_engine_table_picks_by_prefix():
    assert ENGINES.names() == ("http", "blend", "vllm", "torch", "llama.cpp")
    for spec, name in (
        ("http://h:1/v1#m", "http"),
        ("https://h/v1", "http"),
        ("blend:a+b", "blend"),
        ("vllm:org/m", "vllm"),
        ("torch:org/m", "torch"),
        ("smollm2-135m", "llama.cpp"),
        ("x.gguf", "llama.cpp"),
        ("hf:o/r/f.gguf", "llama.cpp"),
    ):
        assert engine_kind(spec)[0] == name, spec


def test_options_of_other_engines_are_dropped_and_unknown_ones_rejected():
    run = {"n_threads": 2, "n_ctx": 512, "max_seqs": 4}  # what a run passes to every engine
    assert engine_options("http://h:1/v1#m", {**run, "timeout": 5}) == {"timeout": 5}
    assert engine_options("torch:org/m", {**run, "dtype": "bf16"}) == {"dtype": "bf16"}
    assert engine_options("blend:a+b", {**run, "name": "x"}) == run
    assert engine_options("smollm2-135m", {**run, "timeout": 5}) == run
    assert engine_options("vllm:org/m", {**run, "enforce_eager": True}) == {"enforce_eager": True}  # an engine arg
    with pytest.raises(
        MarginalError, match=r"backend option 'n_thread' .* llama.cpp engine .*did you mean 'n_threads'"
    ):
        load_backend("smollm2-135m", n_thread=2)  # refused before any model is loaded
    with pytest.raises(MarginalError, match="backend option 'temprature'"):
        load_backend("http://127.0.0.1:9/v1#m", temprature=0.1)


# ------------------------------------------------------------ the cache


class FakeEngine:
    def __init__(self, name, options):
        self.name, self.options, self.closed = name, options, 0

    def generate(self, prompts, spec):
        return [[Completion("x", (), 0.0, "stop", 1, 0)] * spec.n for _ in prompts]

    def close(self):
        self.closed += 1


def test_engines_load_once_per_model_and_options_and_close_all(monkeypatch):
    loaded = []

    def fake_load(model, **options):
        loaded.append((model, options))
        return FakeEngine(model, options)

    monkeypatch.setattr(backends, "load_backend", fake_load)
    mine = FakeEngine("given", {})
    with Engines(n_threads=1) as engines:
        a = engines.get("m1")
        assert engines.get("m1") is a and engines.get("m1", n_ctx=64) is not a
        assert engines.add("given", mine) is mine and engines.get("given") is mine
        serve = engines.backend_for("m1")
        assert serve(Prior("p")) is a and serve(Prior("q", model="m2")).name == "m2"
        assert len(engines) == 4
        assert loaded == [("m1", {"n_threads": 1}), ("m1", {"n_threads": 1, "n_ctx": 64}), ("m2", {"n_threads": 1})]
        engines.add("alias", a)  # the same engine twice is closed once
    assert a.closed == 1 and mine.closed == 1 and len(engines) == 0


def test_engine_cache_keys_unhashable_options(monkeypatch):
    monkeypatch.setattr(backends, "load_backend", lambda model, **o: FakeEngine(model, o))
    engines = Engines(engine_args={"a": [1, 2]})
    assert engines.get("m") is engines.get("m")
    engines.close()


# ------------------------------------------------------ blend specs, samples


def test_reading_blend_specs_loads_no_engine():
    code = (
        "import sys, marginal.analysis.blend as a, marginal.blend.spec as s; "
        "s.parse_blend_spec('blend:a+b:variant=nudge'); "
        "assert not {'llama_cpp', 'marginal.backends.llamacpp', 'marginal.blend.engine'} & set(sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_blend_variants_are_a_registry():
    from marginal.blend import BLEND_VARIANTS, VARIANTS, variant_config

    assert BLEND_VARIANTS.names() == VARIANTS and VARIANTS[0] == "blend" and "alpha0.5" in VARIANTS
    with pytest.raises(MarginalError, match="unknown blend variant 'alpha0.3'"):
        variant_config("alpha0.3")


def test_sample_diagnostics_are_a_mapping_that_pickles_and_hashes():
    s = Sample("p", "c", 0, "t", "1", True, None, diagnostics={"interventions": 2, "mean_alpha": None})
    assert pickle.loads(pickle.dumps(s)) == s and hash(s) == hash(Sample("p", "c", 0, "t", "1", True, None))
    assert Sample("p", "c", 0, "t", "1", True, None).diagnostics == {}
    assert Completion("x", (), 0.0, "stop", 1, 0).diagnostics == {}


def test_a_completions_diagnostics_are_stored_with_nan_as_none():
    from marginal.blend.completion import BlendCompletion
    from marginal.runner import diagnostics_of

    c = BlendCompletion("x", (1,), 0.0, "stop", 1, 0, steps=4, interventions=0)
    assert diagnostics_of(c) == {
        "interventions": 0,
        "intervention_rate": 0.0,
        "mean_alpha": None,
        "topk_overlap": None,
        "retokenized": 0,
    }
    assert (
        diagnostics_of(
            BlendCompletion("x", (1,), 0.0, "stop", 1, 0, steps=4, interventions=2, mean_alpha=0.5, topk_overlap=0.25)
        )["mean_alpha"]
        == 0.5
    )
