"""Continuous batching on the real bundled model: requests join and leave a running engine."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from marginal.backends.llamacpp import LlamaCppBackend
from marginal.backends.streaming import Barrier, Driver, Streaming, drain, streaming
from marginal.models import bundled_model_path
from marginal.runner import RunPlan, execute
from marginal.store import Store
from marginal.tasks import load_task
from marginal.types import Chat, Message, SampleSpec

QUESTIONS = [
    "What is 7 times 8?",
    "Name a primary color.",
    "Write one sentence about the moon.",
    "How many legs does a spider have?",
    "What is the capital of Italy?",
]


def chat(q: str, system: str | None = None) -> Chat:
    return Chat(tuple(([Message("system", system)] if system else []) + [Message("user", q)]))


@pytest.fixture(scope="module")
def llm():
    with LlamaCppBackend(bundled_model_path(), n_ctx=2048, max_seqs=4, n_threads=1) as b:
        yield b


def test_llamacpp_streams_and_barrier_wraps_the_rest(llm):
    assert isinstance(llm, Streaming)
    assert streaming(llm) is llm

    class Blocking:
        name = "blocking"

        def generate(self, prompts, spec):
            return llm.generate(prompts, spec)

        def close(self):
            pass

    view = streaming(Blocking())
    assert isinstance(view, Barrier)
    spec = SampleSpec(n=2, max_tokens=6, seed=2)
    futs = [view.submit(chat(q), spec) for q in QUESTIONS[:2]]
    assert drain(view, futs) == llm.generate([chat(q) for q in QUESTIONS[:2]], spec)


def test_late_requests_match_what_they_get_alone(llm):
    """A request admitted while others run gets what it gets alone: the same greedy text
    (batch numerics allowing), the same seeds and prompt lengths on a sampled spec."""
    greedy = SampleSpec(n=1, temperature=0, max_tokens=10)
    sampled = SampleSpec(n=3, temperature=0.9, max_tokens=10, seed=5)
    alone_g = llm.generate([chat(QUESTIONS[4])], greedy)[0]
    alone_s = llm.generate([chat(QUESTIONS[3])], sampled)[0]
    llm.begin_run()
    first = [llm.submit(chat(q), SampleSpec(n=2, max_tokens=24, seed=1)) for q in QUESTIONS[:3]]
    for _ in range(3):  # the first requests are running when the next ones arrive
        llm.step()
    assert not all(f.done() for f in first)
    late_g = llm.submit(chat(QUESTIONS[4]), greedy)
    late_s = llm.submit(chat(QUESTIONS[3]), sampled)
    drain(llm, [*first, late_g, late_s])
    assert late_g.result()[0].text == alone_g[0].text
    assert [c.seed for c in late_s.result()] == [c.seed for c in alone_s]
    assert [c.prompt_tokens for c in late_s.result()] == [c.prompt_tokens for c in alone_s]
    assert llm.stats.max_active <= llm.max_seqs


def test_slots_are_never_exceeded_and_freed_as_sequences_finish():
    with LlamaCppBackend(bundled_model_path(), n_ctx=2048, max_seqs=3, n_threads=1) as b:
        b.reset_stats()
        out = b.generate([chat(q) for q in QUESTIONS], SampleSpec(n=4, max_tokens=24, seed=3))
        s = b.stats
    assert [len(r) for r in out] == [4] * len(QUESTIONS)
    assert s.max_active == 3
    # slots stay busy: a finished sequence's slot is taken at once (only the last wave drains)
    assert s.active_steps / s.decode_calls > 2.4, s


def test_cancellation_frees_slots(llm):
    llm.begin_run()
    long = [llm.submit(chat(q), SampleSpec(n=4, max_tokens=200, seed=4)) for q in QUESTIONS[:2]]
    for _ in range(4):
        llm.step()
    assert all(f.cancel() for f in long)  # running requests can be cancelled
    short = llm.submit(chat(QUESTIONS[2]), SampleSpec(n=4, max_tokens=6, seed=4))
    steps = 0
    while not short.done():
        llm.step()
        steps += 1
    assert steps < 40 and not llm.engine.busy
    assert all(f.cancelled() for f in long)
    # every slot and cell came back: a request that needs them all runs
    assert len(llm.generate([chat(QUESTIONS[0])], SampleSpec(n=4, max_tokens=4, seed=1))[0]) == 4


def test_thread_safe_submission(llm):
    llm.begin_run()
    spec = SampleSpec(n=2, max_tokens=6, seed=8)
    results = {}

    def client(i):
        results[i] = llm.generate([chat(QUESTIONS[i])], spec)[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == list(range(len(QUESTIONS)))
    for i, row in results.items():
        assert [c.seed for c in row] == [spec.sequence_seed(chat(QUESTIONS[i]).key(), j) for j in range(2)]


def test_prefix_cache_evaluates_a_shared_fewshot_prefix_once():
    system = "You are a careful assistant. " * 20
    prompts = [chat(q, system=system) for q in QUESTIONS]
    spec = SampleSpec(n=1, max_tokens=4, seed=1)
    with LlamaCppBackend(bundled_model_path(), n_ctx=4096, max_seqs=1, n_threads=1, prefix_cache=0) as off:
        off.generate(prompts, spec)
        before = off.stats.prompt_tokens_evaluated
    with LlamaCppBackend(bundled_model_path(), n_ctx=4096, max_seqs=1, n_threads=1) as on:
        lens = [len(on.tokenize(p)) for p in prompts]
        out = on.generate(prompts, spec)
        after = on.stats
        shared = len(on.tokenize(chat("x", system=system))) - len(on.tokenize(chat("x")))
    assert before == sum(lens)
    assert after.prompt_tokens_evaluated + after.prefix_tokens_reused == before
    assert after.prefix_tokens_reused >= (len(prompts) - 1) * shared  # the system text is evaluated once
    assert out[0][0].cached_prompt_tokens == 0 and all(r[0].cached_prompt_tokens >= shared for r in out[1:])


def test_driver_calls_back_in_order_and_allows_more_submissions(llm):
    seen = []
    spec = SampleSpec(n=1, max_tokens=4, seed=1)

    def on_done(tag, comps):
        seen.append(tag)
        if tag < 2:
            driver.submit(llm, chat(QUESTIONS[tag + 3]), spec, tag + 10)

    driver = Driver(on_done)
    for t in range(3):
        driver.submit(llm, chat(QUESTIONS[t]), spec, t)
    driver.run()
    assert sorted(seen) == [0, 1, 2, 10, 11] and driver.outstanding == 0


def test_killed_grid_run_resumes_with_nothing_lost_or_duplicated(tmp_path):
    from importlib.resources import files

    task = load_task(f"jsonl:{files('marginal') / 'data' / 'demo.jsonl'}")
    plan = RunPlan(
        task.name,
        "smollm2-135m",
        SampleSpec(n=3, max_tokens=8, seed=0),
        tuple(task.bank()[:2]),
        tuple(task.problems()[:4]),
    )
    db = tmp_path / "run.db"

    class Killed(Exception):
        pass

    def kill(progress):
        raise Killed

    with LlamaCppBackend(bundled_model_path(), n_ctx=2048, max_seqs=4, n_threads=1) as b:
        store = Store(db)
        with pytest.raises(Killed):
            execute(plan, task, lambda prior: b, store, batch_samples=6, on_progress=kill)
        store.close()
        with sqlite3.connect(db) as c:
            kept = c.execute("SELECT problem_id, prior, idx, seed FROM samples").fetchall()
        assert 6 <= len(kept) < 4 * 2 * 3
        store = Store(db)
        execute(plan, task, lambda prior: b, store, batch_samples=6)
        store.close()
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT problem_id, prior, idx, seed FROM samples").fetchall()
    assert len(rows) == len(set((p, c_, i) for p, c_, i, _ in rows)) == 4 * 2 * 3
    assert set(kept) <= set(rows)


def test_per_sequence_kv_streams_give_the_same_structure_and_reproduce():
    """kv_unified=False: each sequence attends over its own stream; copies between streams copy data."""
    prompts = [chat(q, system="You are a careful assistant.") for q in QUESTIONS[:3]]
    spec = SampleSpec(n=3, temperature=0.8, max_tokens=12, seed=6)
    greedy = SampleSpec(n=1, temperature=0, max_tokens=12)
    with LlamaCppBackend(bundled_model_path(), n_ctx=4096, max_seqs=4, n_threads=1) as uni:
        want = uni.generate(prompts, spec)
        want_g = uni.generate(prompts, greedy)
    with LlamaCppBackend(
        bundled_model_path(), n_ctx=8 * 512, max_seqs=4, prefix_cache=4, n_threads=1, kv_unified=False
    ) as streams:
        assert streams.seq_ctx == 512
        got = streams.generate(prompts, spec)
        again = streams.generate(prompts, spec)
        got_g = streams.generate(prompts, greedy)
        s = streams.stats
        too_long = streams.generate(["word " * 600], greedy)[0][0]
    assert got == again
    assert [[c.seed for c in r] for r in got] == [[c.seed for c in r] for r in want]
    assert [[c.prompt_tokens for c in r] for r in got] == [[c.prompt_tokens for c in r] for r in want]
    assert [r[0].text for r in got_g] == [r[0].text for r in want_g]
    assert s.prefix_tokens_reused > 0 and s.max_active <= 4
    assert too_long.finish_reason == "error" and "512 tokens per sequence" in too_long.error


def test_batches_go_in_sequence_id_order_on_the_lowest_free_ids():
    """Every decode lists its sequence ids in order (streams: one pass per run of consecutive ids),
    each new sequence takes the lowest free id, and logits rows still reach their own sequences: a
    request that joins mid-run gets its greedy text alone."""
    greedy = SampleSpec(n=1, temperature=0, max_tokens=16)
    with LlamaCppBackend(
        bundled_model_path(), n_ctx=8 * 512, max_seqs=4, prefix_cache=4, n_threads=1, kv_unified=False
    ) as llm:
        alone = llm.generate([chat(QUESTIONS[4])], greedy)[0][0].text
        e = llm.engine
        seen: list[list[int]] = []
        decode = e.decode

        def record(k: int) -> bool:
            seen.append(e.batch_arrays[2][:k].tolist())
            return decode(k)

        e.decode = record  # type: ignore[method-assign]
        llm.begin_run()
        first = [llm.submit(chat(q), SampleSpec(n=2, max_tokens=20, seed=3)) for q in QUESTIONS[:3]]
        for _ in range(4):
            llm.step()
        late = llm.submit(chat(QUESTIONS[4]), greedy)
        drain(llm, [*first, late])
    assert late.result()[0].text == alone
    assert all(ids == sorted(ids) for ids in seen)
    assert all(0 <= i < 4 for ids in seen for i in ids)  # prefix-cache ids 4..7 are never decoded
    assert sorted(set(seen[0])) == [0, 1, 2, 3][: len(set(seen[0]))]  # the first prompts take ids 0, 1, ...


def test_seq_len_caps_one_sequence_of_a_unified_cache_and_the_training_context_caps_all():
    """What `slot_options` relies on: in one shared pool of cells, ``seq_len`` is one sequence's limit
    (prompt plus completion), and no sequence may pass the model's training context."""
    import llama_cpp as ll

    greedy = SampleSpec(n=1, temperature=0, max_tokens=400)
    with LlamaCppBackend(bundled_model_path(), n_ctx=4096, max_seqs=4, seq_len=256, n_threads=1) as llm:
        assert llm.seq_ctx == 256
        too_long, fits = (r[0] for r in llm.generate(["word " * 300, "Count to one hundred."], greedy))
        train = ll.llama_model_n_ctx_train(llm.model_handle)
    assert too_long.finish_reason == "error" and "256 tokens per sequence" in too_long.error
    assert fits.error is None and fits.prompt_tokens + fits.completion_tokens <= 256
    with LlamaCppBackend(bundled_model_path(), n_ctx=2 * train, max_seqs=2, n_threads=1) as wide:
        assert wide.seq_ctx == train


def test_interrupted_grid_run_stores_every_finished_sample(tmp_path):
    """Ctrl-C in the middle of a grid run: the samples that finished before it are committed, not lost."""
    from importlib.resources import files

    task = load_task(f"jsonl:{files('marginal') / 'data' / 'demo.jsonl'}")
    plan = RunPlan(
        task.name,
        "smollm2-135m",
        SampleSpec(n=2, max_tokens=6, seed=0),
        tuple(task.bank()[:2]),
        tuple(task.problems()[:4]),
    )
    finished: list[int] = []
    at_interrupt: list[int] = []  # samples finished when interrupted (closing the engine fails the rest)

    class Interrupting:
        """The real engine, interrupted (as by Ctrl-C) at its first step after a request finished."""

        def __init__(self, engine):
            self.engine, self.name = engine, engine.name

        def submit(self, prompt, spec):
            fut = self.engine.submit(prompt, spec)
            fut.add_done_callback(lambda f: finished.append(len(f.result())))
            return fut

        def step(self):
            if finished:  # the first request is done: interrupt before the rest
                at_interrupt.append(sum(finished))
                raise KeyboardInterrupt
            return self.engine.step()

        def generate(self, prompts, spec):
            return self.engine.generate(prompts, spec)

        def close(self):
            pass

    db = tmp_path / "run.db"
    with LlamaCppBackend(bundled_model_path(), n_ctx=2048, max_seqs=2, n_threads=1) as b:
        engine = Interrupting(b)
        assert isinstance(engine, Streaming)
        store = Store(db)
        with pytest.raises(KeyboardInterrupt):
            execute(plan, task, lambda prior: engine, store, batch_samples=100)  # no commit before the end
        store.close()
    with sqlite3.connect(db) as c:
        kept = c.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert 2 <= kept == at_interrupt[0] < 4 * 2 * 2  # without the final commit: 0 (batch_samples=100)
