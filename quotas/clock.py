"""Time for the quota daemon: the real clock, and a virtual one tests move by hand.

Everything in ``kernelhub.quotas`` that waits or stamps a sample takes a
``Clock``, so that sampling, replay and policy run the same code in production
and in tests, where ten minutes of trace pass in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

# How many times VirtualClock.run_for hands control back to the event loop after
# waking sleepers: enough for a woken task to do its (I/O-free) work and reach its
# next sleep; the loop has no "idle" hook that would tell us exactly when.
SETTLE_ROUNDS = 20


class Clock(Protocol):
    """Seconds since the epoch, and a way to wait for some of them to pass."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time (``time.time``); waits with ``asyncio.sleep``."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that only moves when told to, so tests drive time without waiting.

    ``sleep`` returns once ``advance`` (or ``run_for``) has moved the clock to or
    past its deadline. Sleepers are woken in deadline order.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        # (deadline, tie-breaker, future): the counter keeps equal deadlines FIFO
        # and stops heapq from ever comparing two futures.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones not counted)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            # Still yield, as asyncio.sleep(0) does, so a loop of zero sleeps
            # cannot starve other tasks.
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come.

        Woken tasks run the next time the test yields to the event loop.
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        self._now += seconds
        self._wake_due()

    async def run_for(self, seconds: float) -> None:
        """Advance ``seconds`` in steps, letting woken tasks run at each deadline.

        A task that samples every second therefore sees every tick, as it would
        in real time. Suits code whose awaits between sleeps do no real I/O.
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        target = self._now + seconds
        await self._settle()
        while True:
            deadline = self._next_deadline()
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            self._wake_due()
            await self._settle()
        self._now = target

    def _next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleeps
        return self._sleepers[0][0] if self._sleepers else None

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @staticmethod
    async def _settle() -> None:
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
