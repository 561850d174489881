"""Kernel execution state for the quota daemon: the runtimes' own reports, read from the
hub at most once per ``ttl`` and only in cycles where a decision may depend on them.

Each runtime reports its kernels to the hub with its own token (on change, and as a
heartbeat every minute), and the hub answers all reports in one call: no request of
the daemon ever goes to a user's server. Most cycles no decision depends on kernel
state (a runtime far from its idle limit stays unjudged whatever its kernels do), so
the daemon asks only for the runtimes it names (near the idle threshold, or watched by
the mining detector).

A report older than ``max_age`` counts as none: its runtime has stopped reporting
(stuck, or reporting was switched off by its user), and the daemon falls back to the
hub's last activity, as for a runtime that never reported. A runtime's report only
ever speaks for itself, so a misbehaving runtime changes only its own reading.
"""

from __future__ import annotations

from collections.abc import Iterable

from kernelhub.quotas.hub_api import KernelActivity, KernelReport
from kernelhub.quotas.ports import HubClient
from kernelhub.quotas.runtime_view import Runtime

KERNELS_TTL = 4.0  # seconds an answer is reused: well under any idle limit's granularity
# the runtimes' heartbeat is a minute (kernelhub_snippets.kernel_reports): three missed
# heartbeats, and the runtime is taken to have stopped reporting
REPORT_MAX_AGE = 180.0


class KernelActivityCache:
    """The daemon's one way to kernel state: ``HubClient.kernel_reports``, cached."""

    def __init__(self, ttl: float = KERNELS_TTL, max_age: float = REPORT_MAX_AGE) -> None:
        self.ttl = ttl
        self.max_age = max_age
        self._read: tuple[float, dict[str, KernelReport]] | None = None  # (time, reports)

    async def read(
        self, hub: HubClient, runtimes: Iterable[Runtime], now: float
    ) -> dict[str, KernelActivity | None]:
        """Kernel state of each of ``runtimes`` by key; None where the runtime has no
        fresh report. Nothing is asked for no runtime."""
        keys = [r.key for r in runtimes]
        if not keys:
            return {}
        if self._read is None or not 0 <= now - self._read[0] < self.ttl:
            self._read = (now, dict(await hub.kernel_reports()))
        read_at, reports = self._read
        since = now - read_at
        found: dict[str, KernelActivity | None] = {}
        for key in keys:
            report = reports.get(key)
            fresh = report is not None and report.age + since <= self.max_age
            found[key] = report.activity if fresh and report is not None else None
        return found

    def forget(self, key: str) -> None:
        """A runtime stopped: a cached report of it must not describe its next start."""
        if self._read is not None:
            self._read[1].pop(key, None)
