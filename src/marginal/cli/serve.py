"""`marginal serve`: the OpenAI-compatible server (`marginal.serve`) on one engine for all requests.

The options are the server's defaults; each request may override budget, policy, task,
priors and threshold in its ``marginal`` object and the sampling settings in its own
fields. The model and tasks load before the server listens (a bad option is one error
line and exit code 2). Without the ``serve`` extra the command prints the install line
and exits 2. Left out: TLS and several worker processes (one process holds the engine).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..config import sample_spec
from ..errors import MarginalError
from .common import err, names, out, plain, task_help

_POLICIES = [name for name in names("policy") if name != "planned"]


def serve(
    model: str = typer.Option(
        "smollm2-135m",
        "--model",
        "-m",
        help="anything marginal run --model takes: a catalog name, .gguf, http://host:port/v1#name, vllm:, torch:, "
        "blend:",
    ),
    task: str = typer.Option(
        "gsm8k", help=f"default task ({task_help()}) or grader ({'|'.join(names('grader'))}): how answers are read"
    ),
    policy: str = typer.Option("adaptive", help="default policy: " + "|".join(_POLICIES)),
    budget: int = typer.Option(16, "--budget", "-B", help="default samples per request"),
    max_budget: int = typer.Option(256, help="the largest budget a request may ask for"),
    priors: str | None = typer.Option(
        None, "--priors", "-k", help="default priors: K or names 'a,b' (default: the whole bank)"
    ),
    priors_file: Path | None = typer.Option(None, "--priors-file", help="YAML bank of priors instead of the task's"),
    threshold: float = typer.Option(0.95, help="adaptive: stop when P(leader stays leader) reaches this"),
    max_tokens: int = typer.Option(256, help="default and largest max_tokens per sample"),
    temperature: float = typer.Option(0.7, help="default sampling temperature"),
    seed: int = typer.Option(0, help="default base seed (a request's seed replaces it)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, help="port to listen on"),
    store: Path | None = typer.Option(
        None,
        help="SQLite store for every request's samples and decisions (marginal analyze/report read it); "
        "without it no question is written anywhere",
    ),
    api_key: str | None = typer.Option(
        None, envvar="MARGINAL_API_KEY", help="require Authorization: Bearer KEY on /v1 (env MARGINAL_API_KEY)"
    ),
    max_queue: int = typer.Option(256, help="most requests in flight; more get 429"),
    slots: int = typer.Option(32, help="llama.cpp: sequences decoded together across all requests"),
    threads: int | None = typer.Option(None, help="CPU threads for llama.cpp (default: all cores)"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Serve OpenAI's /v1/chat/completions: each request's budget is spent on priors x samples by the
    policy, the vote streams live, and the response carries the margin, the votes and the true cost.

    All concurrent requests share one engine (continuous batching). Without --store no question is written anywhere."""
    from ..serve import INSTALL_HINT, missing

    if missing() is not None:
        err.print(plain(INSTALL_HINT))
        sys.exit(2)
    import uvicorn

    from ..backends import engine_kind, slot_options
    from ..serve.app import Server, create_app
    from ..serve.options import ServeConfig

    config = ServeConfig(
        model=model,
        task=task,
        policy=policy,
        budget=budget,
        priors=priors,
        priors_file=priors_file,
        threshold=threshold,
        sampling=sample_spec(n=1, temperature=temperature, max_tokens=max_tokens, seed=seed),
        max_budget=max_budget,
        max_queue=max_queue,
        api_key=api_key,
        store=store,
        slots=slots,
        threads=threads,
    )
    check_port(host, port)  # before the model loads
    options = slot_options(slots, max_tokens, threads=threads)
    if engine_kind(model)[0] == "http" and "#" in model:
        options["check"] = False  # an upstream that is down now answers 503 per request, not a failed start
    server = Server(config, **options)
    url = f"http://{host}:{port}/v1"
    out.print(
        plain(
            f"marginal serve: {server.hub.name} on {url} · task {task} · policy {policy} · budget {budget}"
            + (f" · store {store}" if store else " · nothing stored")
        )
    )
    try:
        # open streams get 10 s to finish on Ctrl-C / SIGTERM, then they are cut
        uvicorn.run(create_app(server), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    finally:
        server.close()


def check_port(host: str, port: int) -> None:
    """A MarginalError when ``host:port`` cannot be listened on (in use, or not an address here)."""
    import socket

    if not 0 <= port <= 65535:
        raise MarginalError(f"--port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except OSError as e:
        raise MarginalError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port or --host"
        ) from None


__all__ = ["check_port", "serve"]
