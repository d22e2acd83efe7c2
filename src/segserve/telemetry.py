"""Prometheus metrics of the service, named ``segserve_*`` in base units.

The metrics are created on first use, not at import: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` in each
worker after importing the service module, and prometheus_client must see it when a metric is created so
that every worker process writes to the one registry that ``/metrics`` serves.
"""

from __future__ import annotations

from functools import lru_cache

# Latency buckets (seconds) sized for CPU inference of one image up to a batch under load.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
_RATIO_BUCKETS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.16, 0.33, 0.5, 1.0)  # ASTM D610 limits
IN_FLIGHT = "segserve_requests_in_flight"  # the gauge of calls in flight, which segserve.drain reads too


class Telemetry:
    """The service's metrics. Labels are low-cardinality only: transport, method, model, code."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "segserve_requests_total",
            "Requests answered, by transport (grpc, http), method, model and status code.",
            ["transport", "method", "model", "code"],
        )
        self.latency = Histogram(
            "segserve_request_duration_seconds",
            "Time from receiving a request to answering it.",
            ["transport", "method", "model"],
            buckets=_LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            IN_FLIGHT,
            "Requests being served now, by transport.",
            ["transport"],
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "segserve_batch_size",
            "Images per model call after adaptive batching.",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
        )
        self.compute = Histogram(
            "segserve_model_compute_seconds",
            "Time the model took for one batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
        )
        self.model_info = Gauge(
            "segserve_model_info",
            "Served models: 1 for each loaded model name and version, with the backend and precision that run it.",
            ["model", "version", "backend", "precision"],
            multiprocess_mode="max",
        )
        self.model_configured = Gauge(
            "segserve_model_configured",
            "Models the server is set to serve (SEGSERVE_MODELS): 1 for each name from the start, before any has"
            " loaded; segserve_model_info says which have.",
            ["model"],
            multiprocess_mode="max",
        )
        self.corrosion_ratio = Histogram(
            "segserve_corrosion_asset_ratio",
            "Corroded share of the asset in answered Segment and Evaluate requests.",
            ["model"],
            buckets=_RATIO_BUCKETS,
        )
        self.confidence = Histogram(
            "segserve_prediction_confidence",
            "Mean top class probability of each answered Segment and Evaluate request (a fall signals drift).",
            ["model"],
            buckets=_CONFIDENCE_BUCKETS,
        )
        self.review_flags = Counter(
            "segserve_review_flags_total",
            "Answers flagged for review, by model and reason (an answer with two reasons counts twice).",
            ["model", "reason"],
        )
        # The inspection history (segserve.history): written off the request path, so its failures are counted
        # here rather than answered.
        self.history_written = Counter(
            "segserve_history_records_written_total",
            "Inspections written to the history's database.",
        )
        self.history_write_failures = Counter(
            "segserve_history_write_failures_total",
            "Failed attempts to reach or write the history's database (each batch is retried up to a limit).",
        )
        self.history_dropped = Counter(
            "segserve_history_records_dropped_total",
            "Answered Segment calls the history did not keep, by reason: queue_full, retries_exhausted, shutdown,"
            " invalid.",
            ["reason"],
        )
        self.history_queued = Gauge(
            "segserve_history_queue_records",
            "Answers waiting in the history's write queue.",
            multiprocess_mode="livesum",
        )


@lru_cache(maxsize=1)
def get_telemetry() -> Telemetry:
    """The process's metrics, created on first call."""
    return Telemetry()
