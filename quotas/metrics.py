"""Prometheus metrics of the quota daemon, in a registry of its own.

A registry per daemon (not prometheus_client's global one) keeps tests that
run several daemons in one process from sharing counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "QuotaMetrics"]


class QuotaMetrics:
    """GPU utilization per GPU, GPU-seconds per user, stops per reason, cycle cost."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.gpu_utilization = Gauge(
            "kernelhub_gpu_utilization",
            "SM utilization of each GPU at the last sample, percent",
            ["gpu"],
            registry=self.registry,
        )
        self.user_gpu_seconds = Counter(
            "kernelhub_user_gpu_seconds",
            "GPU-seconds accounted to each user (GPUs held x seconds)",
            ["user"],
            registry=self.registry,
        )
        self.stops = Counter(
            "kernelhub_stops",
            "Runtimes the quota daemon stopped, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.runtimes = Gauge(
            "kernelhub_runtimes", "Runtimes seen running at the last cycle", registry=self.registry
        )
        self.cycle_seconds = Histogram(
            "kernelhub_quotad_cycle_seconds",
            "Wall time of one sampling cycle",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.gpu_sampling = Gauge(
            "kernelhub_gpu_sampling_enabled",
            "1 when GPUs are sampled, 0 when sampling is off (no NVML)",
            registry=self.registry,
        )

    def gpu(self, gpu: str, sm_util: float | None) -> None:
        if sm_util is not None:
            self.gpu_utilization.labels(gpu=gpu).set(sm_util)

    def render(self) -> bytes:
        """The exposition text for ``GET /metrics``."""
        return generate_latest(self.registry)
