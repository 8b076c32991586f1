"""The FastAPI app: ``/v1/chat/completions``, ``/v1/models``, ``/health`` and ``/metrics``.

`Server` holds what all requests share: the resolver of per-request options, the engines
(`EngineHub`), the store writer (`Recorder`, with ``--store``) and the metrics; `create_app`
serves it. A chat request is checked (400 with OpenAI's error JSON for any bad field),
admitted when fewer than ``max_queue`` requests are in flight (else 429), solved by a
`RequestSolve`, and answered as one ChatCompletion or, with ``stream``, as server-sent
chunks: a role chunk, one progress chunk (empty delta, a ``marginal`` progress object)
after each policy step, the winning text as content deltas, a chunk with ``finish_reason``
and the ``marginal`` result, a usage chunk with ``stream_options.include_usage``, then
``[DONE]``. An error after a stream has started is sent as an ``error`` event (the
``openai`` client raises it). A client that disconnects, streaming or not, cancels its
remaining samples. With ``api_key`` every ``/v1`` route needs ``Authorization: Bearer KEY``
(401 otherwise); ``/health`` and ``/metrics`` stay open. Left out: CORS, TLS (put a proxy
in front) and the legacy ``/v1/completions`` endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..backends.base import Backend
from ..errors import MarginalError
from ..types import Problem, Sample
from .engines import EngineHub
from .errors import APIError, invalid
from .metrics import Metrics
from .options import Resolver, ServeConfig
from .prompt import conversation
from .recorder import Recorder
from .schema import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    Model,
    ModelList,
    ResponseMessage,
    Usage,
)
from .solver import RequestSolve

log = logging.getLogger("marginal.serve")


class Server:
    """What every request shares (see the module docstring)."""

    def __init__(self, config: ServeConfig, backend: Backend | None = None, **backend_options: Any) -> None:
        self.config = config
        self.resolver = Resolver(config)
        self.hub = EngineHub(backend if backend is not None else config.model, **backend_options)
        self.recorder = Recorder(config.store, self.hub.name) if config.store else None
        self.metrics = Metrics()
        self.in_flight = 0
        self.created = int(time.time())
        self.closed = False

    def close(self) -> None:
        """Stop the engines and the store writer (once; later calls do nothing)."""
        if self.closed:
            return
        self.closed = True
        self.hub.close()
        if self.recorder is not None:
            self.recorder.close()

    def admit(self) -> None:
        if self.in_flight >= self.config.max_queue:
            raise APIError(
                429,
                f"the server is at its --max-queue of {self.config.max_queue} requests; retry later",
                code="queue_full",
            )
        self.in_flight += 1
        self.metrics.queue.set(self.in_flight)

    def release(self) -> None:
        self.in_flight -= 1
        self.metrics.queue.set(self.in_flight)


class BearerAuth:
    """``Authorization: Bearer KEY`` on every ``/v1`` route when the server has an API key (401 otherwise).

    A plain ASGI middleware: it leaves ``receive`` as it is, so a handler still sees its client disconnect."""

    def __init__(self, app, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send) -> None:
        key = self.server.config.api_key
        if key and scope["type"] == "http" and scope["path"].startswith("/v1"):
            got = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if got != f"Bearer {key}":
                e = APIError(401, "invalid API key; send Authorization: Bearer KEY", code="invalid_api_key")
                self.server.metrics.requests.labels("401").inc()
                await JSONResponse(e.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _param(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if x not in ("body",))


def parse_request(raw: bytes) -> ChatRequest:
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid(f"the body is not JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object with messages", code="invalid_json")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = _param(first["loc"])
        raise invalid(f"{where or 'body'}: {first['msg']}", where or None) from None
    req.check()
    return req


def finish_reason(sample: Sample) -> Literal["stop", "length"]:
    """OpenAI's finish reason of the winning sample."""
    return "length" if sample.finish_reason == "length" else "stop"


def pieces(text: str) -> list[str]:
    """The winning text cut into content deltas (a word with its following space each)."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def create_app(server: Server) -> FastAPI:
    """The FastAPI app serving ``server`` (closed when the app shuts down)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(title="marginal serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    _add_error_handlers(app)
    app.add_middleware(BearerAuth, server=server)
    _add_info_routes(app, server)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        req, rs, rid = await _admit(server, request)
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _stream(server, rs, rid, created, server.hub.name, include_usage, t0)
            # a stream that never starts (its client gone first) still leaves the queue
            weakref.finalize(events, _finish, server, rs, "499", t0)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        if not await _solve_unless_gone(server, request, rs, t0):
            return Response(status_code=499)
        best = rs.best_sample()
        body = ChatCompletion(
            id=rid,
            created=created,
            model=server.hub.name,
            choices=[Choice(message=ResponseMessage(content=best.text), finish_reason=finish_reason(best))],
            usage=Usage.model_validate(rs.usage()),
            marginal=rs.summary(),
        )
        return JSONResponse(body.model_dump())

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error JSON, never a traceback."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse(APIError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("marginal serve: request failed")
        return JSONResponse(APIError(500, f"internal error ({type(e).__name__})").body(), status_code=500)


def _add_info_routes(app: FastAPI, server: Server) -> None:
    """``/health``, ``/metrics`` and ``/v1/models``."""
    name = server.hub.name

    @app.get("/health")
    async def health() -> JSONResponse:
        err = server.hub.error
        body = {
            "status": "ok" if err is None else "engine stopped",
            "model": name,
            "in_flight": server.in_flight,
            "engine_busy": server.hub.busy,
        }
        return JSONResponse(body, status_code=200 if err is None else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        data, ctype = server.metrics.render()
        return Response(data, media_type=ctype)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(ModelList(data=[Model(id=name, created=server.created)]).model_dump())

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> JSONResponse:
        if model_id != name:
            raise APIError(404, f"model {model_id!r} is not served; this server serves {name!r}", param="model")
        return JSONResponse(Model(id=name, created=server.created).model_dump())


async def _admit(server: Server, request: Request) -> tuple[ChatRequest, RequestSolve, str]:
    """Parse and check a chat request, take its place in the queue and open its store run:
    the request, its solve and its id (an `APIError` for bad input or a full queue)."""
    try:
        req = parse_request(await request.body())
        conv = conversation(req.turns())
        ask = server.resolver.resolve(req)
    except MarginalError as e:
        server.metrics.requests.labels(str(getattr(e, "status", 400))).inc()
        raise e if isinstance(e, APIError) else invalid(str(e)) from None
    rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    problem = Problem(rid, conv.question)
    run: list[str] = []

    def on_step(samples, rows) -> None:
        if server.recorder and run:
            server.recorder.step(run[0], samples, rows)

    rs = RequestSolve(server.hub, ask, conv, problem, on_step=on_step)
    try:
        await asyncio.to_thread(rs.check)
        server.admit()
    except APIError as e:
        server.metrics.requests.labels(str(e.status)).inc()
        raise
    if server.recorder:
        run.append(server.recorder.begin(ask, problem))
    return req, rs, rid


async def _solve_unless_gone(server: Server, request: Request, rs: RequestSolve, t0: float) -> bool:
    """Solve a non-streaming request; False (its samples cancelled) if its client disconnects first."""
    task = asyncio.ensure_future(_drain(server, rs, t0))
    status = "200"
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                status = "499"
                break
        await asyncio.gather(task, return_exceptions=status == "499")
        return status != "499"
    except APIError as e:
        status = str(e.status)
        raise
    except BaseException:
        status = "500"
        raise
    finally:
        _finish(server, rs, status, t0)


async def _drain(server: Server, rs: RequestSolve, t0: float) -> None:
    first = True
    async for _ in rs.run():
        if first:
            server.metrics.first.observe(time.perf_counter() - t0)
            first = False


def _finish(server: Server, rs: RequestSolve, status: str, t0: float) -> None:
    """Count a finished request (once) and release its place in the queue."""
    if rs.finished:
        return
    rs.finished = True
    m = server.metrics
    server.release()
    m.requests.labels(status).inc()
    m.latency.observe(time.perf_counter() - t0)
    samples = rs.solve.state.samples
    m.samples.inc(len(samples))
    m.cancelled.inc(rs.cancelled)
    m.tokens.labels("prompt").inc(sum(s.prompt_tokens for s in samples))
    m.tokens.labels("completion").inc(sum(s.completion_tokens for s in samples))
    m.tokens.labels("cached").inc(sum(s.cached_prompt_tokens for s in samples))
    if rs.result is not None:
        m.saved.inc(rs.result.budget - rs.result.used)


async def _stream(
    server: Server, rs: RequestSolve, rid: str, created: int, name: str, include_usage: bool, t0: float
) -> AsyncIterator[str]:
    def chunk(**kw: Any) -> str:
        if include_usage:
            kw.setdefault("usage", None)
        return ChatCompletionChunk(id=rid, created=created, model=name, **kw).sse()

    status = "200"
    try:
        yield chunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=""))])
        first = True
        async for progress in rs.run():
            if first:
                server.metrics.first.observe(time.perf_counter() - t0)
                first = False
            yield chunk(choices=[ChunkChoice()], marginal=progress)
        best = rs.best_sample()
        for piece in pieces(best.text):
            yield chunk(choices=[ChunkChoice(delta=Delta(content=piece))])
        yield chunk(choices=[ChunkChoice(finish_reason=finish_reason(best))], marginal=rs.summary())
        if include_usage:
            yield chunk(choices=[], usage=rs.usage())
        yield "data: [DONE]\n\n"
    except APIError as e:
        status = str(e.status)
        yield f"data: {json.dumps(e.body())}\n\n"
    except asyncio.CancelledError:
        status = "499"
        raise
    except Exception as e:
        status = "500"
        log.exception("marginal serve: stream failed")
        yield f"data: {json.dumps(APIError(500, f'internal error ({type(e).__name__})').body())}\n\n"
    finally:
        _finish(server, rs, status, t0)


__all__ = ["BearerAuth", "Server", "create_app", "parse_request", "pieces"]
