"""`marginal serve` end to end: real server processes on 127.0.0.1, the real `openai` client.

One server for most tests (bundled SmolLM2, task ``numeric``, small budgets and max_tokens);
a second with ``--store --api-key --max-queue 1`` for auth, the full queue and a kill -9
mid-request; a third in front of a llama.cpp server (the upstream ``http://`` model).
Unit tests of the prompt rule (system text) and the option resolution run in process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

for _m in ("fastapi", "uvicorn", "prometheus_client", "openai"):
    pytest.importorskip(_m)

import openai

from marginal.serve.prompt import conversation
from marginal.tasks.banks import numeric_bank
from marginal.types import Message, Prior, SampleSpec, prompt_key

MAX_TOKENS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Served:
    """A `marginal serve` process."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1"
        self.log = log
        cmd = [sys.executable, "-m", "marginal", "serve", "--port", str(self.port), "--threads", "1", *args]
        self._f = open(log, "wb")  # noqa: SIM115 - open as long as the process runs
        self.proc = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"marginal serve exited with {self.proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if _get(f"{self.base}/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"marginal serve did not answer within 120 s: {log.read_text()[-3000:]}")

    def metric(self, name: str) -> float:
        _, text = _get(f"{self.base}/metrics")
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._f.close()


def _serve(tmp_path_factory, *args: str) -> Served:
    return Served(
        ["--task", "numeric", "--budget", "2", "--max-tokens", "32", *args], tmp_path_factory.mktemp("serve") / "log"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = _serve(tmp_path_factory, "--slots", "32")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as c:
        yield c


def _ask(client, question: str, **kw):
    marginal = kw.pop("marginal", {})
    return client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": question}],
        max_tokens=kw.pop("max_tokens", MAX_TOKENS),
        extra_body={"marginal": marginal},
        **kw,
    )


def _mx(chunk) -> dict | None:
    """A chunk's ``marginal`` object (absent from chunks without one)."""
    return (chunk.model_extra or {}).get("marginal")


def _expected_seed(question: str, prior: str, index: int, seed: int = 0) -> int:
    conv = conversation([("user", question)])
    p = next(c for c in numeric_bank() if c.name == prior)
    return SampleSpec(seed=seed).sequence_seed(prompt_key(conv.render(p)), index)


def _check_result(resp, question: str, budget: int) -> None:
    m = resp.marginal
    assert resp.object == "chat.completion" and len(resp.choices) == 1
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert 1 <= m["used"] == len(m["samples"]) <= budget == m["budget"]
    assert m["saved"] == budget - m["used"]
    assert m["decisions"][-1]["kind"] == "stop" and m["stop_reason"] == m["decisions"][-1]["reason"]
    assert sum(v["samples"] for v in m["priors"].values()) == m["used"]
    assert resp.usage.completion_tokens == sum(s["completion_tokens"] for s in m["samples"])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert 0 <= resp.usage.prompt_tokens_details.cached_tokens <= resp.usage.prompt_tokens
    for s in m["samples"]:  # every sample was drawn for this question: its seed derives from its prompt
        assert s["seed"] == _expected_seed(question, s["prior"], s["index"])
    if m["answer"] is not None:
        assert 0 <= m["margin"] <= 1 and abs(sum(m["shares"].values()) - 1) < 1e-9
        assert any(s["answer"] == m["answer"] for s in m["samples"])


# ---------------------------------------------------------------- in process


def test_system_text_combines_prior_first_then_user():
    prior = Prior("p", "{question}\nAnswer with a number.", system="You are a careful tutor.", fewshot=(("1+1?", "2"),))
    conv = conversation([("system", "Reply in French."), ("user", "Hi"), ("assistant", "Bonjour"), ("user", "2+2?")])
    msgs = conv.render(prior).messages
    assert msgs[0] == Message("system", "You are a careful tutor.\n\nReply in French.")
    assert msgs[1:3] == (Message("user", "1+1?\nAnswer with a number."), Message("assistant", "2"))
    assert msgs[3:5] == (Message("user", "Hi"), Message("assistant", "Bonjour"))
    assert msgs[5] == Message("user", "2+2?\nAnswer with a number.")
    assert conv.question == "2+2?"
    # either alone when the other is absent; none when both are
    assert conversation([("user", "q")]).render(Prior("a", system="S")).messages[0] == Message("system", "S")
    assert conversation([("developer", "U"), ("user", "q")]).render(Prior("a")).messages[0] == Message("system", "U")
    assert [m.role for m in conversation([("user", "q")]).render(Prior("a")).messages] == ["user"]


def test_without_the_extra_serve_prints_the_install_line(monkeypatch):
    from typer.testing import CliRunner

    import marginal.serve
    from marginal.cli.app import app

    monkeypatch.setattr(marginal.serve, "missing", lambda: "fastapi")
    r = CliRunner().invoke(app, ["serve"])
    assert r.exit_code == 2 and "pip install 'marginal[serve]'" in r.output


def test_core_cli_does_not_import_the_server_stack():
    stack = ("fastapi", "uvicorn", "prometheus_client")
    code = f"import sys, marginal.cli.app; print(sorted(m for m in {stack!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--policy", "adaptve"], "did you mean 'adaptive'"),
        (["--budget", "0"], "--budget must be a positive integer"),
        (["--task", "gsm8"], "did you mean 'gsm8k'"),
        (["--task", "numeric", "--priors", "defalt"], "did you mean 'default'"),
        (["--port", "-1"], "--port must be in"),
    ],
)
def test_bad_server_options_are_one_line(args, needle):
    r = subprocess.run([sys.executable, "-m", "marginal", "serve", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error:") and needle in " ".join(r.stderr.split())


def test_a_port_in_use_is_one_line(server):
    r = subprocess.run(
        [sys.executable, "-m", "marginal", "serve", "--task", "numeric", "--port", str(server.port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.startswith("error: cannot listen on 127.0.0.1:"), r.stderr


def test_system_message_reaches_the_model(server, client):
    """The user's system text changes the prompt, hence the samples' seeds (they derive from the prompt)."""
    q = "What is 3 + 4?"
    plain = _ask(client, q, marginal={"budget": 1})
    sys_msgs = [{"role": "system", "content": "Answer tersely."}, {"role": "user", "content": q}]
    withsys = client.chat.completions.create(
        model="m", messages=sys_msgs, max_tokens=MAX_TOKENS, extra_body={"marginal": {"budget": 1}}
    )
    assert plain.marginal["samples"][0]["seed"] == _expected_seed(q, "default", 0)
    conv = conversation([("system", "Answer tersely."), ("user", q)])
    want = SampleSpec().sequence_seed(prompt_key(conv.render(numeric_bank()[0])), 0)
    assert withsys.marginal["samples"][0]["seed"] == want != plain.marginal["samples"][0]["seed"]


# ---------------------------------------------------------------- one server


def test_models_health_metrics(server, client):
    assert [m.id for m in client.models.list()] == ["smollm2-135m"]
    status, body = _get(f"{server.base}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, text = _get(f"{server.base}/metrics")
    assert status == 200
    for name in (
        "marginal_requests_total",
        "marginal_samples_total",
        "marginal_tokens_total",
        "marginal_samples_saved_total",
        "marginal_request_seconds_bucket",
        "marginal_queue_depth",
    ):
        assert name in text


def test_non_stream(server, client):
    before = server.metric("marginal_samples_total")
    q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    resp = _ask(client, q, marginal={"budget": 4, "policy": "adaptive"}, temperature=0.8, seed=0)
    _check_result(resp, q, 4)
    assert resp.model == "smollm2-135m" and resp.id.startswith("chatcmpl-")
    assert resp.choices[0].message.role == "assistant" and resp.choices[0].message.content
    assert server.metric("marginal_samples_total") - before == resp.marginal["used"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream(client, include_usage):
    q = f"What is {5 + include_usage} times 2?"
    kw = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(_ask(client, q, stream=True, marginal={"budget": 4}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    progress = [_mx(c) for c in chunks if c.choices and _mx(c) and "leader" in _mx(c)]
    assert progress and all(p["used"] <= 4 for p in progress)
    assert [p["used"] for p in progress] == sorted(p["used"] for p in progress)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason in ("stop", "length")
    result = _mx(final[0])
    assert result["used"] == progress[-1]["used"] and result["answer"] == progress[-1]["leader"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage) == 1 and usage[0] is chunks[-1] and chunks[-1].choices == []
        assert usage[0].usage.completion_tokens == sum(s["completion_tokens"] for s in result["samples"])
    else:
        assert usage == []


def test_stream_async_with_max_completion_tokens(server):
    async def main():
        async with openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as c:
            stream = await c.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "What is 6 + 6?"}],
                max_completion_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"marginal": {"budget": 2}},
            )
            return [ch async for ch in stream]

    chunks = asyncio.run(main())
    result = next(_mx(c) for c in chunks if c.choices and c.choices[0].finish_reason)
    assert chunks[-1].usage.completion_tokens == sum(s["completion_tokens"] for s in result["samples"])
    assert all(s["completion_tokens"] <= 12 for s in result["samples"])
    assert any(_mx(c) and "leader" in _mx(c) for c in chunks)


def test_concurrent_distinct_questions_async(server):
    questions = [f"What is {i} plus {2 * i + 1}?" for i in range(32)]

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=300) as c:
            return await asyncio.gather(
                *(
                    c.chat.completions.create(
                        model="m",
                        messages=[{"role": "user", "content": q}],
                        max_tokens=4,
                        extra_body={"marginal": {"budget": 2}},
                    )
                    for q in questions
                )
            )

    waits: list[float] = []
    stop = threading.Event()

    def poll_health():  # the engine runs off the event loop: the server answers while it decodes
        while not stop.is_set():
            t = time.perf_counter()
            assert _get(f"{server.base}/health")[0] == 200
            waits.append(time.perf_counter() - t)
            time.sleep(0.2)

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    try:
        responses = asyncio.run(main())
    finally:
        stop.set()
        poller.join(15)
    assert waits and max(waits) < 5, f"/health took up to {max(waits):.1f} s while 32 requests ran"
    assert len(responses) == 32 and len({r.id for r in responses}) == 32
    for q, r in zip(questions, responses):
        _check_result(r, q, 2)
    print(f"32 concurrent requests x 2 samples: {time.perf_counter() - t0:.1f} s; /health at most {max(waits):.2f} s")


def test_disconnect_mid_stream_cancels(server, client):
    cancelled = server.metric("marginal_samples_cancelled_total")
    stream = _ask(
        client,
        "A train travels 60 km per hour for 3 hours. How far does it go?",
        stream=True,
        max_tokens=32,
        marginal={"budget": 64, "threshold": 1.0},
    )
    for c in stream:
        if _mx(c) and "leader" in _mx(c):
            break
    stream.close()
    _wait_idle(server)
    assert server.metric("marginal_samples_cancelled_total") > cancelled


def test_disconnect_without_stream_cancels(server):
    cancelled = server.metric("marginal_samples_cancelled_total")
    with (
        openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=3) as impatient,
        pytest.raises(openai.APITimeoutError),
    ):
        _ask(impatient, "What is 81 divided by 9?", max_tokens=32, marginal={"budget": 64, "threshold": 1.0})
    _wait_idle(server)
    assert server.metric("marginal_samples_cancelled_total") > cancelled


def _wait_idle(server: Served) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = json.loads(_get(f"{server.base}/health")[1])
        if server.metric("marginal_queue_depth") == 0 and health["engine_busy"] is False:
            return
        time.sleep(0.2)
    pytest.fail("the disconnected request kept running")


BAD = [
    ({"marginal": {"budget": 0}}, "marginal.budget", "positive"),
    ({"marginal": {"policy": "adaptve"}}, "marginal.policy", "did you mean 'adaptive'"),
    ({"marginal": {"priors": "defalt"}}, "marginal.priors", "did you mean 'default'"),
    ({"marginal": {"task": "gsm8"}}, "marginal.task", "did you mean 'gsm8k'"),
    ({"marginal": {"task": "jsonl:/etc/passwd"}}, "marginal.task", "file"),
    ({"marginal": {"budget": "lots"}}, "marginal.budget", "integer"),
    ({"marginal": {"bugdet": 3}}, "marginal.bugdet", "extra"),
    ({"messages": []}, "messages", "empty"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages", "user"),
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "at least 1"),
    ({"max_tokens": 100000}, "max_tokens", "--max-tokens"),
    ({"temperature": -1}, "temperature", "temperature"),
    ({"n": 3}, "n", "n must be 1"),
    ({"messages": [{"role": "user", "content": "word " * 4000}]}, "messages", "context"),
]


@pytest.mark.parametrize(("change", "param", "needle"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_is_openai_400(client, change, param, needle):
    body = {"model": "m", "messages": [{"role": "user", "content": "What is 1 + 1?"}], "max_tokens": 8, **change}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            **{k: v for k, v in body.items() if k != "marginal"}, extra_body={"marginal": body.get("marginal", {})}
        )
    e = info.value
    assert e.status_code == 400
    err = e.body if "message" in e.body else e.body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert needle.lower() in err["message"].lower() and "Traceback" not in err["message"]


def test_bad_bodies_and_routes(server):
    status, body = _post(f"{server.url}/chat/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = _post(f"{server.url}/chat/completions", json.dumps({"model": "m"}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    status, text = _get(f"{server.url}/nowhere")
    assert status == 404 and set(json.loads(text)["error"]) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------- store, auth, queue, kill


def test_auth_queue_and_kill_with_store(tmp_path_factory, tmp_path):
    db = tmp_path / "serve.db"
    s = _serve(tmp_path_factory, "--store", str(db), "--api-key", "sekret", "--max-queue", "1", "--slots", "8")
    try:
        with openai.OpenAI(base_url=s.url, api_key="wrong", max_retries=0, timeout=60) as bad:
            with pytest.raises(openai.AuthenticationError) as info:
                _ask(bad, "What is 1 + 1?")
            assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        assert _get(f"{s.base}/health")[0] == 200  # health stays open
        with openai.OpenAI(base_url=s.url, api_key="sekret", max_retries=0, timeout=120) as c:
            done = _ask(c, "What is 2 + 2?", marginal={"budget": 2})
            assert done.marginal["used"] >= 1
            stream = _ask(c, "What is 9 + 8?", stream=True, max_tokens=32, marginal={"budget": 32, "threshold": 1.0})
            got = threading.Event()

            def read():
                try:
                    for ch in stream:
                        if _mx(ch) and "leader" in _mx(ch):
                            got.set()
                except openai.APIConnectionError:  # the server is killed mid-stream
                    pass

            t = threading.Thread(target=read, daemon=True)
            t.start()
            assert got.wait(120), "no progress event"
            with pytest.raises(openai.RateLimitError) as info:
                _ask(c, "What is 3 + 3?")
            assert info.value.status_code == 429 and info.value.body["code"] == "queue_full"
            time.sleep(0.5)  # the step after the first progress event is being written
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(10)
    finally:
        s.stop()
    from marginal.store import Store

    store = Store(db, readonly=True)
    try:  # one run per settings: the budget-2 request's, and the budget-32 one killed mid-request
        runs = {cfg["policy"]["budget"]: rid for rid, cfg in store.runs()}
        assert sorted(runs) == [2, 32]
        assert store.count(runs[2]) == done.marginal["used"]
        killed = runs[32]
        assert 4 <= store.count(killed) < 32 and store.decisions(killed)
        assert [p.question for p in store.problems(killed)] == ["What is 9 + 8?"]
    finally:
        store.close()
    out = subprocess.run(
        [sys.executable, "-m", "marginal", "analyze", str(db), "--run", killed],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout


# ---------------------------------------------------------------- upstream http:// model


def test_upstream_http_model(smol_path, tmp_path_factory):
    from test_http_backend import _start_llama_server, _stop

    proc, url = _start_llama_server(smol_path, tmp_path_factory.mktemp("upstream") / "llama.log")
    s = None
    try:
        s = _serve(tmp_path_factory, "--model", f"{url}#smol")
        with openai.OpenAI(base_url=s.url, api_key="none", max_retries=0, timeout=300) as c:
            assert [m.id for m in c.models.list()] == [f"{url}#smol"]
            r = _ask(c, "What is 4 + 4?", max_tokens=16, marginal={"budget": 2})
            assert r.marginal["used"] == 2 and r.usage.completion_tokens > 0 and r.choices[0].message.content
            with pytest.raises(openai.BadRequestError) as info:  # the upstream's own context check
                _ask(c, "word " * 3000, max_tokens=16, marginal={"budget": 2})
            assert info.value.body["code"] == "context_length_exceeded"
            _stop(proc)
            with pytest.raises(openai.APIStatusError) as info:
                _ask(c, "What is 5 + 5?", max_tokens=16, marginal={"budget": 2})
            assert info.value.status_code == 503 and info.value.body["code"] == "upstream_unreachable"
    finally:
        _stop(proc)
        if s is not None:
            s.stop()
