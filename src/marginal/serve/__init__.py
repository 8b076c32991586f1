"""`marginal serve`: an OpenAI-compatible server that spends each request's budget on priors x samples.

Layout, one job per module:

- ``errors``: `APIError`, a `MarginalError` with the HTTP status and OpenAI error fields.
- ``schema``: the request and response bodies (pydantic), OpenAI's chat-completions schema
  plus the ``marginal`` objects.
- ``prompt``: a request's messages as a `Conversation`, rendered under a prior.
- ``options``: `ServeConfig` (the server's defaults) and `Resolver` (a request's options ->
  task, priors, policy, sampling, budget).
- ``engines``: `EngineHub`, one engine per model behind a `Pump` thread, shared by all requests.
- ``solver``: `solve_request`, one request's policy driven over the shared engines, step by step.
- ``recorder``: `Recorder`, the SQLite store writer (``--store``).
- ``metrics``: the Prometheus metrics.
- ``app``: the FastAPI app (routes, streaming, errors, auth, queue).

FastAPI, uvicorn and prometheus-client are the optional extra ``serve``; nothing outside this
package imports them. `missing` names the first one that is not installed.
Left out: tool calls, images, logprobs in responses, ``n`` > 1 choices and the Responses API.
"""

from __future__ import annotations

import importlib.util

DEPENDENCIES = ("fastapi", "uvicorn", "prometheus_client")
INSTALL_HINT = "pip install 'marginal[serve]'"


def missing() -> str | None:
    """The first module of the ``serve`` extra that is not installed, or None."""
    return next((m for m in DEPENDENCIES if importlib.util.find_spec(m) is None), None)


__all__ = ["DEPENDENCIES", "INSTALL_HINT", "missing"]
