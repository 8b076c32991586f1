"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own.

- ``marginal_requests_total{status}``: finished requests by HTTP status;
- ``marginal_samples_total``: samples generated; ``marginal_samples_saved_total``: budget
  left unspent by early stops; ``marginal_samples_cancelled_total``: samples cancelled
  because their client went away;
- ``marginal_tokens_total{kind}``: prompt, completion and cached prompt tokens;
- ``marginal_request_seconds``: latency histogram; ``marginal_first_progress_seconds``:
  time to the first progress event;
- ``marginal_queue_depth``: requests admitted and not finished (what ``--max-queue`` bounds).
Left out: per-prior and per-task labels.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("marginal_requests", "finished requests by HTTP status", ["status"], registry=r)
        self.samples = Counter("marginal_samples", "samples generated", registry=r)
        self.saved = Counter("marginal_samples_saved", "samples of the budget an early stop left unspent", registry=r)
        self.cancelled = Counter("marginal_samples_cancelled", "samples cancelled by a client gone away", registry=r)
        self.tokens = Counter("marginal_tokens", "tokens by kind (prompt, completion, cached)", ["kind"], registry=r)
        self.latency = Histogram("marginal_request_seconds", "request latency", buckets=BUCKETS, registry=r)
        self.first = Histogram(
            "marginal_first_progress_seconds", "time to the first progress event", buckets=BUCKETS, registry=r
        )
        self.queue = Gauge("marginal_queue_depth", "requests admitted and not finished", registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["Metrics"]
