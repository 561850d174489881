"""Kernel execution state for the quota daemon: read only where it can matter, and cached.

Reading a server's ``/api/kernels`` is one HTTP call through the proxy per runtime.
Most cycles no decision depends on it: a runtime far from its idle limit stays
unjudged whatever its kernels do. So the daemon asks only for the runtimes it names
(near the idle threshold, or watched by the mining detector), reuses an answer for
``ttl`` seconds, and asks nothing once the hub has refused access (no
``access:servers``): all due runtimes in one gather per cycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from kernelhub.quotas.hub_api import KernelActivity
from kernelhub.quotas.ports import HubClient
from kernelhub.quotas.runtime_view import Runtime

KERNELS_TTL = 4.0  # seconds an answer is reused: well under any idle limit's granularity


class KernelActivityCache:
    """The daemon's one way to kernel state: ``HubClient.kernel_activity``, cached."""

    def __init__(self, ttl: float = KERNELS_TTL) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[float, KernelActivity | None]] = {}  # key -> (time, answer)

    async def read(
        self, hub: HubClient, runtimes: Iterable[Runtime], now: float
    ) -> dict[str, KernelActivity | None]:
        """Kernel state of each of ``runtimes`` by key: cached where fresh, else read
        (together); nothing where the hub cannot tell (no public URL, or refused)."""
        found: dict[str, KernelActivity | None] = {}
        if not hub.kernels_readable:
            return found
        due: list[Runtime] = []
        for runtime in runtimes:
            cached = self._seen.get(runtime.key)
            if cached is not None and now - cached[0] < self.ttl:
                found[runtime.key] = cached[1]
            else:
                due.append(runtime)
        if not due:
            return found
        answers = await asyncio.gather(*(hub.kernel_activity(r.server) for r in due))
        for runtime, activity in zip(due, answers, strict=True):
            found[runtime.key] = activity
            self._seen[runtime.key] = (now, activity)
        return found

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)
