"""The OpenAI-compatible HTTP backend against real local servers on 127.0.0.1.

- llama-cpp-python's own server (``python -m llama_cpp.server``) with the
  bundled SmolLM2 model, started once for the module: it honours ``seed``,
  silently ignores ``n`` (one choice back), ignores the request's model name
  and answers 400 ``context_length_exceeded`` for an over-long prompt.
- A second llama.cpp server per test for the kill-mid-run case.
- ``FakeOpenAIServer``: a small stdlib HTTP server speaking the same JSON, for
  what llama.cpp's server does not do (``n`` choices, cached-token usage, 429
  and 5xx answers, rejecting ``n``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("openai")

from marginal.backends.http import OpenAIBackend, is_http_model, parse_http_model  # noqa: E402
from marginal.errors import MarginalError  # noqa: E402
from marginal.types import Chat, Message, SampleSpec, prompt_key  # noqa: E402

SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(text: str) -> Chat:
    return Chat((Message("user", text),))


def _start_llama_server(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    for m in SERVER_MODULES:
        pytest.importorskip(m, reason="llama-cpp-python's server needs pip install 'llama-cpp-python[server]'")
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--model_alias",
        "smol",
        "--n_threads",
        "1",
    ]
    with open(log, "wb") as f:  # the server writes to its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            import urllib.request

            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not answer within 90 s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(smol_path, tmp_path_factory):
    proc, url = _start_llama_server(smol_path, tmp_path_factory.mktemp("llama_server") / "server.log")
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def backend(server):
    b = OpenAIBackend(server, "smol", retries=1, max_concurrency=2, timeout=60)
    yield b
    b.close()


# ------------------------------------------------------------------ parsing


def test_parse_http_model():
    assert parse_http_model("http://127.0.0.1:8000/v1#qwen") == ("http://127.0.0.1:8000/v1", "qwen")
    assert parse_http_model("https://h.example/v1/#org/model-7b") == ("https://h.example/v1", "org/model-7b")
    assert parse_http_model("http://localhost:8000/v1") == ("http://localhost:8000/v1", None)
    assert is_http_model("http://x/v1") and not is_http_model("smollm2-135m")
    for bad in ["ftp://h/v1#m", "smollm2-135m", "http://#m", "http://h:port/v1#m", "http://h/v1?x=1#m"]:
        with pytest.raises(MarginalError, match="expected http://host:port/v1#model-name"):
            parse_http_model(bad)


# ---------------------------------------------------- the real llama.cpp server


def test_submit_streams_requests_through_bounded_workers(backend):
    """The incremental form: each prompt is a request of its own, at most max_concurrency in
    flight, admitted as each returns; the same seeds as generate's."""
    from marginal.backends.streaming import Driver, Streaming

    assert isinstance(backend, Streaming)
    prompts = [_chat(f"Name a number above {k}.") for k in range(5)]
    spec = SampleSpec(n=2, temperature=0.7, max_tokens=6, seed=3)
    done = {}
    driver = Driver(lambda tag, comps: done.__setitem__(tag, comps))
    for i, p in enumerate(prompts):
        driver.submit(backend, p, spec, i)
    driver.run()
    assert sorted(done) == list(range(5)) and not backend.step()
    for i, p in enumerate(prompts):
        assert [c.seed for c in done[i]] == [spec.sequence_seed(prompt_key(p), j) for j in range(2)]
        assert all(c.finish_reason in ("stop", "length") and c.completion_tokens >= 1 for c in done[i])


def test_chat_n_per_prompt_in_order_with_usage(backend):
    prompts = [_chat("Name a colour."), _chat("Name an animal."), _chat("Say hi.")]
    spec = SampleSpec(n=3, temperature=0.7, max_tokens=8, seed=11)
    out = backend.generate(prompts, spec)
    assert [len(row) for row in out] == [3, 3, 3]
    assert backend._use_n is False  # the server answered n=3 with one choice: per-sample requests from then on
    for p, row in zip(prompts, out):
        for j, c in enumerate(row):
            assert c.error is None and c.finish_reason in ("stop", "length")
            assert c.seed == spec.sequence_seed(prompt_key(p), j)
            assert c.prompt_tokens > 5  # the chat template's tokens are counted
            assert 1 <= c.completion_tokens <= 8
            assert c.logprob < 0
        assert len({c.text for c in row}) > 1, row  # three seeds, not one sample copied

    # seeded: the same prompts in the opposite order give the same completions, reversed
    back = backend.generate(prompts[::-1], spec)
    _nearly_same([c.text for row in back[::-1] for c in row], [c.text for row in out for c in row])
    # completion j has the seed of sample first_index + j
    later = backend.generate(prompts[:1], SampleSpec(n=2, temperature=0.7, max_tokens=8, seed=11, first_index=1))
    _nearly_same([c.text for c in later[0]], [c.text for c in out[0][1:]])


def _nearly_same(a: list[str], b: list[str]) -> None:
    """The same seeded samples. llama-cpp-python's server re-evaluates only the part of a prompt
    that differs from the previous request's, so its logits differ in the last bits with the
    request order and a sampled token may rarely flip, the first one too (CI, 2026-12-03: one of
    nine samples began differently): at most one pair in four (and at least one) may differ;
    unseeded sampling would change almost every pair."""
    assert len(a) == len(b)
    assert sum(x != y for x, y in zip(a, b)) <= max(1, len(a) // 4), list(zip(a, b))


def test_text_prompt_uses_completions_endpoint_and_stop(backend, smol):
    out = backend.generate(["1, 2, 3, 4,"], SampleSpec(n=1, temperature=0, max_tokens=12, stop=(",",)))
    (c,) = out[0]
    assert c.finish_reason == "stop" and "," not in c.text and c.text.strip() == "5"
    assert c.prompt_tokens == len(smol.tokenize("1, 2, 3, 4,")) and c.completion_tokens >= 1 and c.logprob <= 0
    raw = backend.generate(["The sky is"], SampleSpec(n=2, temperature=0.9, max_tokens=6, seed=3))
    assert len(raw[0]) == 2 and all(c.finish_reason == "length" and c.completion_tokens == 6 for c in raw[0])


def test_use_n_true_on_a_server_without_n(server):
    with (
        OpenAIBackend(server, "smol", use_n=True, retries=0) as b,
        pytest.raises(MarginalError, match="does not return n=2 choices"),
    ):
        b.generate([_chat("Hi")], SampleSpec(n=2, max_tokens=4))


def test_unreachable_server():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(MarginalError, match=r"^model server .* is unreachable: Connection error"):
        OpenAIBackend(url, "m", retries=0)
    b = OpenAIBackend(url, "m", retries=1, check=False)
    with pytest.raises(MarginalError, match="unreachable"):
        b.generate(["hi"], SampleSpec(max_tokens=4))


def test_wrong_model_name(server):
    with pytest.raises(MarginalError, match=r"model 'smoll' is not served by .*did you mean 'smol'.*it serves: smol"):
        OpenAIBackend(server, "smoll")
    # without the check, llama-cpp-python's server answers for any model name (documented behaviour)
    with OpenAIBackend(server, "smoll", check=False, retries=0) as b:
        assert b.generate(["Hi"], SampleSpec(max_tokens=2, temperature=0))[0][0].error is None
    # no model named: the server's only model is used
    with OpenAIBackend.from_spec(server) as b:
        assert b.model == "smol" and b.name == server


def test_prompt_longer_than_context(backend):
    with pytest.raises(
        MarginalError, match=r"prompt 1 does not fit the context of model server .*maximum context length is 2048"
    ):
        backend.generate(["Hi", "hello " * 2500], SampleSpec(max_tokens=4, temperature=0))


def test_server_killed_mid_run(smol_path, tmp_path):
    log = tmp_path / "server.log"
    proc, url = _start_llama_server(smol_path, log)
    try:
        b = OpenAIBackend(url, "smol", retries=1, max_concurrency=2, timeout=30)
        box: dict = {}

        def run():
            try:
                box["out"] = b.generate(
                    [_chat(f"Tell me about the number {i}.") for i in range(8)],
                    SampleSpec(n=2, temperature=0.8, max_tokens=16),
                )
            except Exception as e:  # noqa: BLE001 - the test inspects it
                box["err"] = e

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 60
        while b"200 OK" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"200 OK" in log.read_bytes(), "the server answered no request"
        os.kill(proc.pid, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive()
        assert "out" not in box
        assert isinstance(box["err"], MarginalError), box
        assert "unreachable" in str(box["err"]) and "\n" not in str(box["err"])
    finally:
        _stop(proc)


# ------------------------------------------------------ a fake server for the rest


class FakeOpenAIServer:
    """A stdlib HTTP server that answers like an OpenAI-compatible one.

    ``mode``: "n" honours n (choices with logprobs, cached-token usage);
    "reject_n" answers n > 1 as llama.cpp's C++ server does (400);
    "no_logprobs" answers 400 to any request asking for logprobs; prompts containing
    "RATE" get one 429 first, prompts containing "BROKEN" always get 500.
    Every request body is kept in ``requests``.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[dict] = []
        self.seen: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake-7b", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append(body)
                text = body.get("prompt") or body["messages"][-1]["content"]
                n = body.get("n", 1)
                if "BROKEN" in text:
                    return self._send(500, {"error": {"message": "boom"}})
                if "RATE" in text and text not in fake.seen:
                    fake.seen.add(text)
                    return self._send(429, {"error": {"message": "slow down"}})
                if fake.mode == "no_logprobs" and ("logprobs" in body or "top_logprobs" in body):
                    return self._send(400, {"error": {"message": "logprobs are not supported"}})
                if fake.mode == "reject_n" and n > 1:  # llama.cpp's C++ server says this
                    return self._send(400, {"error": {"message": "Only one completion choice is allowed"}})
                chat = "messages" in body
                choices = []
                for i in range(n):
                    out = f"{text}|{body['seed']}|{i}"
                    toks = [out[k : k + 3] for k in range(0, len(out), 3)]
                    if chat:
                        lp = {"content": [{"token": t, "logprob": -0.5, "top_logprobs": []} for t in toks]}
                        choice = {"message": {"role": "assistant", "content": out}, "finish_reason": "stop"}
                    else:
                        lp = {
                            "tokens": toks,
                            "token_logprobs": [-0.25] * len(toks),
                            "text_offset": [],
                            "top_logprobs": [],
                        }
                        choice = {"text": out, "finish_reason": "length"}
                    choices.append({"index": i, "logprobs": None if fake.mode == "no_logprobs" else lp, **choice})
                usage = {
                    "prompt_tokens": 7,
                    "completion_tokens": 99,
                    "total_tokens": 106,
                    "prompt_tokens_details": {"cached_tokens": 4},
                }
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion" if chat else "text_completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": choices[::-1],
                        "usage": usage,
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_server_side_n_one_request_per_prompt():
    with FakeOpenAIServer("n") as srv, OpenAIBackend(srv.url, "fake-7b", retries=0) as b:
        prompts = [_chat("a"), "b", _chat("c")]
        spec = SampleSpec(n=3, seed=5, top_k=20, min_p=0.05, stop=("\n",))
        out = b.generate(prompts, spec)
        assert len(srv.requests) == 3 and all(r["n"] == 3 for r in srv.requests)
        assert {r["seed"] for r in srv.requests} == {spec.sequence_seed(prompt_key(p), 0) for p in prompts}
        assert all(r["top_k"] == 20 and r["min_p"] == 0.05 and r["stop"] == ["\n"] for r in srv.requests)
        for p, row in zip(prompts, out):
            s0 = spec.sequence_seed(prompt_key(p), 0)
            text = p if isinstance(p, str) else p.messages[-1].content
            assert [c.text for c in row] == [f"{text}|{s0}|{i}" for i in range(3)]  # sorted by choice index
            assert all(c.seed == s0 and c.prompt_tokens == 7 and c.cached_prompt_tokens == 4 for c in row)
            assert [c.completion_tokens for c in row] == [len(range(0, len(c.text), 3)) for c in row]
        assert out[1][0].finish_reason == "length" and out[1][0].logprob == pytest.approx(
            -0.25 * out[1][0].completion_tokens
        )
        assert out[0][0].finish_reason == "stop" and out[0][0].logprob == pytest.approx(
            -0.5 * out[0][0].completion_tokens
        )


def test_server_rejecting_n_falls_back_to_seeded_single_requests():
    with FakeOpenAIServer("reject_n") as srv, OpenAIBackend(srv.url, "fake-7b", retries=0, max_concurrency=4) as b:
        spec = SampleSpec(n=4, seed=1)
        out = b.generate([_chat("x"), _chat("y")], spec)
        assert b._use_n is False
        assert srv.requests[0]["n"] == 4 and all("n" not in r for r in srv.requests[1:])
        assert len(srv.requests) == 1 + 8
        for p, row in zip(["x", "y"], out):
            assert [c.text for c in row] == [f"{p}|{spec.sequence_seed(prompt_key(_chat(p)), j)}|0" for j in range(4)]


def test_retries_on_429_and_error_completions_on_5xx():
    with FakeOpenAIServer("n") as srv, OpenAIBackend(srv.url, "fake-7b", retries=1, use_n=False) as b:
        out = b.generate(["RATE me", "BROKEN", "fine"], SampleSpec(n=2, seed=2))
        assert [c.text.split("|")[0] for c in out[0]] == ["RATE me", "RATE me"]  # retried after 429
        assert all(c.finish_reason == "error" and "boom" in c.error and c.text == "" for c in out[1])
        assert [c.seed for c in out[1]] == [SampleSpec(n=2, seed=2).sequence_seed("BROKEN", j) for j in range(2)]
        assert all(c.error is None for c in out[2])
        assert sum("BROKEN" in r["prompt"] for r in srv.requests) == 4  # 2 samples x (1 try + 1 retry)
        with pytest.raises(MarginalError, match="every request failed; last error: .*boom"):
            b.generate(["BROKEN"], SampleSpec(n=1))


def test_server_without_logprobs():
    with FakeOpenAIServer("no_logprobs") as srv, OpenAIBackend(srv.url, "fake-7b", retries=0) as b:
        out = b.generate([_chat("a"), "b"], SampleSpec(n=2, seed=5))
        assert b._logprobs is False and srv.requests[0].get("logprobs") is True
        assert all("logprobs" not in r for r in srv.requests[1:])
        for row in out:
            # n choices per request, no logprobs: the request's 99 tokens split evenly (approximate)
            assert all(c.error is None and c.logprob == 0.0 and c.completion_tokens == 50 for c in row)
        one = b.generate(["c"], SampleSpec(n=1))
        assert one[0][0].completion_tokens == 99  # one choice: the usage is exact


# ------------------------------------------------------------- through the runner

DEMO = Path(__file__).resolve().parents[1] / "src" / "marginal" / "data" / "demo.jsonl"


def _plan(model: str):
    from marginal.config import ProblemSelection, RunConfig, TaskSource, build_plan
    from marginal.types import SampleSpec

    _, p = build_plan(
        RunConfig(
            TaskSource(f"jsonl:{DEMO}"),
            model=model,
            priors="2",
            samples=2,
            sampling=SampleSpec(max_tokens=12, seed=0),
            problems=ProblemSelection(limit=3),
        )
    )
    return p


def _rows(db):
    import sqlite3

    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT problem_id, prior, idx, seed, text, prompt_tokens, completion_tokens, finish_reason "
            "FROM samples ORDER BY 1, 2, 3"
        ).fetchall()


def test_runner_resumes_after_the_server_is_killed(smol_path, tmp_path):
    """A run whose server dies after its first batch fails with MarginalError, keeps that batch,
    and a second run against a new server adds exactly the missing samples."""
    from marginal.runner import execute
    from marginal.store import Store
    from marginal.tasks import load_task

    plan = _plan("http://127.0.0.1/v1#smol")  # the run's identity; the servers below move ports
    task = load_task(f"jsonl:{DEMO}")
    db = tmp_path / "run.db"
    proc, url = _start_llama_server(smol_path, tmp_path / "s1.log")
    try:
        b = OpenAIBackend(url, "smol", retries=1, max_concurrency=2, timeout=30)
        store = Store(db)

        def kill_after_first(progress):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

        with pytest.raises(MarginalError, match="unreachable"):
            execute(plan, task, lambda prior: b, store, batch_samples=2, on_progress=kill_after_first)
        store.close()
    finally:
        _stop(proc)
    first = _rows(db)
    assert len(first) == 2  # the first batch: one (problem, prior) x 2 samples

    proc, url = _start_llama_server(smol_path, tmp_path / "s2.log")
    try:
        store = Store(db)
        with OpenAIBackend(url, "smol", retries=1) as b:
            execute(plan, task, lambda prior: b, store, batch_samples=2)
        store.close()
    finally:
        _stop(proc)
    got = _rows(db)
    assert len(got) == 3 * 2 * 2 and len({r[:3] for r in got}) == 12 and len({r[3] for r in got}) == 12
    assert [r for r in got if r[:3] in {f[:3] for f in first}] == first  # nothing stored was lost or rewritten
    for r in got:
        assert r[5] > 10 and 1 <= r[6] <= 12 and r[7] in ("stop", "length")  # usage recorded per sample
