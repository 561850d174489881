"""Statistics for the benchmarks' reports: percentiles and the machine's load average."""

from __future__ import annotations

import os
import statistics


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]
