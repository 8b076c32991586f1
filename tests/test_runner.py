"""Runner rules that need no model: truncation, failed samples, batching."""

from fakes import FakeTask, fake_bank

from marginal.runner import TRUNCATED, Group, batches, to_samples
from marginal.types import Completion, Problem, SampleSpec


def comp(text, reason="stop", error=None):
    return Completion(text, (1,), -1.0, reason, 5, 0, 7, error)


def test_truncated_and_errored_completions_fail_with_reasons():
    task = FakeTask(["c0"])
    g = Group(Problem("p0", "q", "42"), fake_bank(["c0"])[0], 0, 4)
    outs = [[comp("ANSWER: 42"), comp("ANSWER: 42", "length"), comp("", "error", "prompt too long"), comp("junk")]]
    s = to_samples(task, [g], outs, 1.0)
    assert [x.answer for x in s] == ["42", None, None, None]
    assert [x.correct for x in s] == [True, None, None, None]
    assert [x.error for x in s] == [None, TRUNCATED, "prompt too long", "no_answer"]
    assert [x.index for x in s] == [0, 1, 2, 3]
    assert all(abs(x.seconds - 0.25) < 1e-12 for x in s)


def test_batches_group_by_engine_offset_and_n():
    bank = fake_bank(["a", "b"])
    other = bank[1].__class__("b2", system="tag:b", model="other")
    p = [Problem(f"p{i}", "q") for i in range(5)]
    groups = [Group(x, bank[0], 0, 4) for x in p] + [Group(p[0], bank[1], 2, 2), Group(p[1], other, 0, 4)]
    out = batches(groups, SampleSpec(n=1, seed=3), batch_samples=8)
    sizes = [(len(chunk), spec.n, spec.first_index) for chunk, spec in out]
    assert sizes == [(2, 4, 0), (2, 4, 0), (1, 4, 0), (1, 2, 2), (1, 4, 0)]
    assert all(spec.seed == 3 for _, spec in out)
    assert sum(len(c) for c, _ in out) == len(groups)
    assert {g.prior.model for g in out[-1][0]} == {"other"}


def test_blend_spec_is_a_model_for_any_run():
    from marginal.backends import load_backend
    from marginal.blend import BlendBackend
    from marginal.types import Chat, Message

    b = load_backend("blend:smollm2-135m+smollm2-135m:gamma=0.5", n_ctx=1024, max_seqs=4)
    try:
        assert isinstance(b, BlendBackend)
        (outs,) = b.generate(
            [Chat((Message("user", "Say hi."),))], SampleSpec(n=2, temperature=0.7, max_tokens=4, seed=1)
        )
        assert len(outs) == 2 and all(c.finish_reason in ("stop", "length") for c in outs)
    finally:
        b.close()


def test_default_file_names_keep_the_model_name():
    from marginal.cli.common import slug as _slug

    assert _slug("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b"
    assert _slug("/models/My Model.Q4.gguf") == "My_Model.Q4"
    assert _slug("http://127.0.0.1:8000/v1#qwen") == "http___127.0.0.1_8000_v1_qwen"
