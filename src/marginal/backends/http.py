"""The OpenAI-compatible HTTP backend: any server that speaks ``/v1`` (vLLM,
SGLang, llama.cpp's server, llama-cpp-python's server, Ollama, OpenAI).

Model spec: ``http://host:port/v1#model-name`` (``https://`` too; see
``parse_http_model``). Without ``#model-name`` the server's only model is used.

How a call to ``generate(prompts, spec)`` runs:

- A ``Chat`` goes to ``chat.completions`` (the server applies its chat
  template); a ``str`` goes to the legacy ``completions`` endpoint as is.
- Sampling settings: ``temperature``, ``top_p``, ``max_tokens``, ``stop`` and
  ``seed`` are standard; ``top_k`` and ``min_p`` are sent in the request body
  only when set (vLLM, SGLang and llama.cpp read them; OpenAI rejects them).
  ``stop`` strings are also cut on the client side, in case a server keeps them.
- Samples: by default (``use_n=None``) the backend asks for ``n`` choices in
  one request per prompt; when the server rejects ``n > 1`` (an error
  naming ``n``) or silently returns fewer choices (llama.cpp servers, Ollama),
  it switches for good to one request per sample, each with its own seed
  ``spec.sequence_seed(prompt_key(prompt), j)``, ``max_concurrency`` in flight.
  With server-side ``n`` the n choices share ONE request seed (that of
  completion 0, stored in each ``Completion.seed``), so they are reproducible
  as a set, not one by one; ``use_n=False`` gives per-sample seeds always
  (the embedded backend's contract), ``use_n=True`` never falls back.
- Log-probabilities are requested (``logprobs``); a server that rejects them is
  asked without from then on, and ``Completion.logprob`` is 0.0. The value is
  what the server reports (vLLM: the raw model's by default).
- Token usage: ``prompt_tokens`` and ``cached_prompt_tokens`` come from the
  response's ``usage`` (cached only where the server reports
  ``prompt_tokens_details.cached_tokens``). Servers send text, not token ids,
  so ``token_ids`` is empty and the count of generated tokens is kept in
  ``ServedCompletion.n_tokens`` (``completion_tokens`` reads it): from the
  logprobs when present, else from ``usage`` (one choice per request), else
  the request's total split evenly over its choices (then approximate).
- Retries: the ``openai`` client retries connection errors, timeouts, 408,
  409, 429 and 5xx ``retries`` times with exponential backoff and jitter
  (honouring ``Retry-After``).

Errors: a server that cannot be reached (after retries), an unknown model
name (checked against ``/models`` on construction when the server lists
models), a prompt longer than the server's context, a rejected request
(400/401/403/404/422) raise ``MarginalError`` with one line, and nothing is
returned for the call. A request that still fails with a 5xx or a timeout
after its retries gives error completions (``finish_reason="error"``) for
its samples only; when every request of a call fails so, the call raises.

Incremental form (`marginal.backends.streaming.Streaming`): ``submit(prompt,
spec)`` sends a prompt's request(s) from a pool of ``max_concurrency`` worker
threads and returns a future; a new request starts as each one returns, and
``step()`` waits for the next to come back. Every request, from calls and
submissions alike, holds one of ``max_concurrency`` places while in flight.

Left out: token streaming, tool calls, images, the Responses API, per-prompt
settings, and token ids (vLLM's ``return_tokens_as_token_ids`` is not asked
for, to stay server-neutral).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import MarginalError, suggest
from ..types import Chat, Completion, FinishReason, Prompt, SampleSpec, prompt_key
from .common import Lifecycle, ensure_open, error_completion, filled, find_stop

__all__ = ["OpenAIBackend", "ServedCompletion", "parse_http_model", "is_http_model"]


@dataclass(frozen=True)
class ServedCompletion(Completion):
    """A Completion from a server: the number of generated tokens is known
    without their ids."""

    n_tokens: int = 0
    """Generated tokens, as counted by the server (see the module docstring)."""

    @property
    def completion_tokens(self) -> int:
        return self.n_tokens


def is_http_model(spec: str) -> bool:
    """Whether a ``--model`` value names a server (``http://`` or ``https://``)."""
    return spec.startswith(("http://", "https://"))


def parse_http_model(spec: str) -> tuple[str, str | None]:
    """``"http://host:port/v1#model"`` -> ``("http://host:port/v1", "model")``.

    The model is None when there is no ``#model`` part (the server's only
    model is then used). Raises MarginalError on anything else.
    """
    expected = "expected http://host:port/v1#model-name"
    if not isinstance(spec, str) or not is_http_model(spec):
        raise MarginalError(f"model server {spec!r} is not an http(s) URL; {expected}")
    url, _, model = spec.partition("#")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise MarginalError(f"model server {spec!r} has a bad port; {expected}") from None
    if not parts.hostname or parts.query:
        raise MarginalError(f"model server {spec!r} has no host or has a query string; {expected}")
    del port
    model = model.strip()
    return url.rstrip("/"), (model or None)


class _Fatal(Exception):
    """A failure that makes the whole call meaningless (becomes MarginalError)."""


class _NoN(Exception):
    """The server does not do n > 1 in one request."""


_CONTEXT_MARKERS = ("context length", "context_length", "context window", "too long", "maximum context", "exceed")


class OpenAIBackend(Lifecycle):
    """A Backend on an OpenAI-compatible server (see the module docstring).

    ``timeout`` is seconds per request (connect and read), ``retries`` the
    client's retries per request. ``check=True`` asks the server's
    ``/models`` on construction so that an unreachable server or an unknown
    model fails at once. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 600.0,
        retries: int = 3,
        use_n: bool | None = None,
        check: bool = True,
        name: str | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise MarginalError("the HTTP backend needs the openai client: pip install 'marginal[http]'") from None
        if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
            raise MarginalError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if not (isinstance(retries, int) and retries >= 0):
            raise MarginalError(f"retries must be an integer >= 0, got {retries!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise MarginalError(f"timeout must be seconds > 0, got {timeout!r}")
        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self._client: openai.OpenAI | None = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=timeout,
            max_retries=retries,
        )
        self._use_n = use_n
        self._n_ok = False
        """The server has answered n > 1 with n choices."""
        self._logprobs = True
        self._lock = threading.Lock()
        self._inflight = threading.BoundedSemaphore(max_concurrency)
        """At most ``max_concurrency`` requests in flight, whoever sends them (calls, submissions)."""
        self._pool: ThreadPoolExecutor | None = None
        self._outstanding: set[Future] = set()
        self.model = model if model else ""
        if check or not model:
            self.model = self._check_model(model)
        self.name = name or f"{self.base_url}#{self.model}"

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> OpenAIBackend:
        """A backend for ``http://host:port/v1#model-name``."""
        base, model = parse_http_model(spec)
        options.setdefault("name", spec)
        return cls(base, model, **options)

    # ---------------------------------------------------------------- public

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` completions for each prompt, in input order."""
        prompts = list(prompts)
        if not prompts:
            return []
        done = self._fill(prompts, spec)
        if all(c.finish_reason == "error" for row in done for c in row):
            raise MarginalError(f"model server {self.base_url}: every request failed; last error: {done[-1][-1].error}")
        return done

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        """Send one prompt's request(s) from a worker thread; the future resolves to its ``spec.n``
        completions (error completions when the server keeps failing; MarginalError as the future's
        exception for what makes every request fail: unreachable server, unknown model, bad key)."""
        ensure_open(self._client, "HTTP backend")
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="marginal-http")
            fut = self._pool.submit(lambda: self._fill([prompt], spec)[0])
            self._outstanding.add(fut)
        fut.add_done_callback(self._outstanding.discard)
        return fut

    def step(self) -> bool:
        """Wait (briefly) until one of the submitted requests returns; False when none is out."""
        pending = [f for f in list(self._outstanding) if not f.done()]
        if not pending:
            return bool(self._outstanding)
        wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
        return True

    def _fill(self, prompts: list[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """Every completion of ``prompts``: n choices per request where the server does n, else one
        request per sample (see the module docstring)."""
        ensure_open(self._client, "HTTP backend")
        results: list[list[Completion | None]] = [[None] * spec.n for _ in prompts]
        try:
            if spec.n > 1 and self._use_n is not False:
                try:
                    self._run(prompts, spec, results, batched=True)
                except _NoN:
                    if self._use_n is True:
                        raise _Fatal(
                            f"model server {self.base_url} does not return n={spec.n} choices per request "
                            "(use_n=True); use use_n=None or False"
                        ) from None
                    self._use_n = False
                    results = [[None] * spec.n for _ in prompts]
            if any(c is None for row in results for c in row):
                self._run(prompts, spec, results, batched=False)
        except _Fatal as e:
            raise MarginalError(str(e)) from None
        return filled(results)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # --------------------------------------------------------------- helpers

    def _check_model(self, model: str | None) -> str:
        assert self._client is not None  # called from __init__, before any close
        o = self._openai
        try:
            listed = [m.id for m in self._client.models.list()]
        except o.APIConnectionError as e:  # includes timeouts
            raise MarginalError(f"model server {self.base_url} is unreachable: {_reason(e)}") from None
        except o.AuthenticationError:
            raise MarginalError(
                f"model server {self.base_url} refused the API key (401); pass api_key or set OPENAI_API_KEY"
            ) from None
        except o.APIStatusError as e:
            if model:  # a server without /models: the name is checked by the first request
                return model
            raise MarginalError(
                f"model server {self.base_url} does not list its models ({e.status_code}); "
                f"name one: {self.base_url}#model-name"
            ) from None
        if not model:
            if len(listed) == 1:
                return listed[0]
            raise MarginalError(
                f"model server {self.base_url} serves {len(listed)} models; name one: "
                f"{self.base_url}#model-name with model-name one of: {', '.join(sorted(listed)) or '(none)'}"
            )
        if listed and model not in listed:
            raise MarginalError(
                f"model {model!r} is not served by {self.base_url}{suggest(model, listed)}; "
                f"it serves: {', '.join(sorted(listed))}"
            )
        return model

    def _run(
        self, prompts: list[Prompt], spec: SampleSpec, results: list[list[Completion | None]], *, batched: bool
    ) -> None:
        jobs: list[tuple[int, list[int]]] = []
        for i in range(len(prompts)):
            todo = [j for j in range(spec.n) if results[i][j] is None]
            if not todo:
                continue
            if batched:
                jobs.append((i, todo))
            else:
                jobs.extend((i, [j]) for j in todo)
        if not jobs:
            return
        if batched and not self._n_ok:  # probe with one prompt: a server without n fails or answers short at once
            self._job(prompts, spec, results, jobs[0], batched=True)
            self._n_ok = True
            jobs = jobs[1:]
        if len(jobs) == 1 or self.max_concurrency == 1:
            for job in jobs:
                self._job(prompts, spec, results, job, batched=batched)
            return
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs)), thread_name_prefix="marginal-http")
        try:
            futures = [pool.submit(self._job, prompts, spec, results, job, batched=batched) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                exc = f.exception()
                if exc is not None:
                    raise exc
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _job(
        self,
        prompts: list[Prompt],
        spec: SampleSpec,
        results: list[list[Completion | None]],
        job: tuple[int, list[int]],
        *,
        batched: bool,
    ) -> None:
        i, js = job
        prompt = prompts[i]
        key = prompt_key(prompt)
        seed = spec.sequence_seed(key, js[0])
        n = len(js)
        try:
            resp = self._request(prompt, spec, n=n, seed=seed, index=i)
        except _Retryable as e:
            for j in js:
                results[i][j] = error_completion(
                    f"model server {self.base_url}: {e}", spec.sequence_seed(key, j), kind=ServedCompletion
                )
            return
        choices = sorted(resp.choices, key=lambda c: c.index)
        if batched and len(choices) < n:
            raise _NoN()
        if len(choices) < n:
            raise _Fatal(f"model server {self.base_url} returned {len(choices)} choices, expected {n}")
        usage = getattr(resp, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        total = int(getattr(usage, "completion_tokens", 0) or 0)
        for j, ch in zip(js, choices):
            results[i][j] = self._completion(
                ch, spec, prompt_tokens, cached, total, n, seed if batched else spec.sequence_seed(key, j)
            )

    def _request(self, prompt: Prompt, spec: SampleSpec, *, n: int, seed: int, index: int):
        o = self._openai
        args: dict[str, Any] = dict(
            model=self.model, n=n, seed=seed, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_tokens
        )
        if spec.stop:
            args["stop"] = list(spec.stop)
        extra: dict[str, Any] = {}
        if spec.top_k:
            extra["top_k"] = spec.top_k
        if spec.min_p:
            extra["min_p"] = spec.min_p
        if extra:
            args["extra_body"] = extra
        if n == 1:
            del args["n"]
        client = self._client
        assert client is not None  # _fill checked that the backend is open
        while True:
            with self._lock:
                logprobs = self._logprobs
            kw = dict(args)
            call: Callable[..., Any]
            if isinstance(prompt, Chat):
                if logprobs:
                    kw.update(logprobs=True, top_logprobs=1)
                call = client.chat.completions.create
                kw["messages"] = [{"role": m.role, "content": m.content} for m in prompt.messages]
            else:
                if logprobs:
                    kw["logprobs"] = 1
                call = client.completions.create
                kw["prompt"] = prompt
            try:
                with self._inflight:
                    return call(**kw)
            except (o.APITimeoutError, o.InternalServerError, o.RateLimitError) as e:
                raise _Retryable(_reason(e)) from None
            except o.APIConnectionError as e:
                raise _Fatal(f"model server {self.base_url} is unreachable: {_reason(e)}") from None
            except o.AuthenticationError:
                raise _Fatal(
                    f"model server {self.base_url} refused the API key (401); pass api_key or set OPENAI_API_KEY"
                ) from None
            except o.NotFoundError as e:
                raise _Fatal(
                    f"model server {self.base_url} has no model {self.model!r} or no such endpoint (404): {_reason(e)}"
                ) from None
            except o.APIStatusError as e:
                msg = _reason(e)
                low = msg.lower()
                if e.status_code in (400, 422) and any(m in low for m in _CONTEXT_MARKERS) and "token" in low:
                    raise _Fatal(
                        f"prompt {index} does not fit the context of model server {self.base_url}: {msg}"
                    ) from None
                if logprobs and "logprob" in low:
                    with self._lock:
                        self._logprobs = False
                    continue
                if n > 1 and e.status_code in (400, 422) and _names_n(low):
                    raise _NoN() from None
                if e.status_code >= 500:
                    raise _Retryable(msg) from None
                raise _Fatal(f"model server {self.base_url} rejected the request ({e.status_code}): {msg}") from None

    def _completion(
        self, ch: Any, spec: SampleSpec, prompt_tokens: int, cached: int, total: int, n: int, seed: int
    ) -> Completion:
        msg = getattr(ch, "message", None)
        text = (msg.content if msg is not None else getattr(ch, "text", None)) or ""
        lps = _token_logprobs(getattr(ch, "logprobs", None))
        if lps is not None:
            n_tokens = len(lps)
            logprob = float(sum(lps))
        else:
            n_tokens = total if n == 1 else round(total / n)
            logprob = 0.0
        reason = getattr(ch, "finish_reason", None)
        error = None
        finish: FinishReason
        if reason == "length":
            finish = "length"
        elif reason == "content_filter":
            finish, error = "error", "the server's content filter stopped the completion"
        else:
            finish = "stop"
        if spec.stop:
            cut = find_stop(text, spec.stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return ServedCompletion(
            text=text,
            token_ids=(),
            logprob=logprob,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached,
            seed=seed,
            error=error,
            n_tokens=n_tokens,
        )


class _Retryable(Exception):
    """A request that still failed with a 5xx, 429 or timeout after the client's retries."""


def _names_n(low: str) -> bool:
    """Whether a server's error message is about the ``n`` parameter."""
    return any(
        s in low
        for s in (
            "'n'",
            '"n"',
            " n ",
            "n must",
            "n >",
            "n=",
            "parameter n",
            "best_of",
            "one completion choice",
            "choices",
        )
    )


def _token_logprobs(lp: Any) -> list[float] | None:
    if lp is None:
        return None
    content = getattr(lp, "content", None)
    if content is not None:  # chat
        return [float(t.logprob) for t in content]
    tl = getattr(lp, "token_logprobs", None)  # legacy completions
    if tl is not None:
        return [float(x) for x in tl if x is not None]
    return None


def _reason(e: Exception) -> str:
    """The server's own message for an error, on one line."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            body = body["error"]
        m = body.get("message") or body.get("detail")
        if m:
            return " ".join(str(m).split())
    text = str(e)
    if e.__cause__ is not None:
        text = f"{text} ({e.__cause__})"
    return " ".join(text.split())
