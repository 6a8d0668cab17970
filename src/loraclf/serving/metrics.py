"""``GET /metrics``: the server's counters in Prometheus' text format (through ``prometheus_client``).

Per run (label ``model``; ``none`` for requests refused before a run was found, so that made-up names sent by
clients never become label values): requests by status code, request latency, texts scored, batch sizes in texts
and in tokens, the time a batch takes, and the texts waiting in the queue. Each server keeps its own collector
registry, so two servers in one process (tests) do not share counts.
"""

from __future__ import annotations

# Seconds, from a few milliseconds (one short text on a warm CPU) to the graceful-shutdown limit.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
UNKNOWN = "none"


class Metrics:
    """The server's metrics; :meth:`render` gives the ``/metrics`` body and its content type."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created timestamp series only double the output
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "loraclf_requests",
            "prediction requests answered, by run and HTTP status",
            ["model", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "loraclf_request_duration_seconds", "prediction request latency, body read to answer sent",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inputs = Counter("loraclf_inputs", "texts scored", ["model"], registry=r)
        self.batch_size = Histogram(
            "loraclf_batch_size", "texts per batch the model ran", ["model"], buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "loraclf_batch_tokens",
            "tokens per batch the model ran",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "loraclf_batch_duration_seconds", "time the model took per batch", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue = Gauge("loraclf_queue_depth", "texts waiting for a batch, by run", ["model"], registry=r)
        self.models = Gauge("loraclf_models", "runs served", registry=r)

    def request(self, model: str, code: int, seconds: float) -> None:
        self.requests.labels(model, str(code)).inc()
        self.latency.labels(model).observe(seconds)

    def batch(self, model: str, texts: int, tokens: int, seconds: float) -> None:
        self.inputs.labels(model).inc(texts)
        self.batch_size.labels(model).observe(texts)
        self.batch_tokens.labels(model).observe(tokens)
        self.batch_seconds.labels(model).observe(seconds)

    def queued(self, model: str, delta: int) -> None:
        self.queue.labels(model).inc(delta)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
