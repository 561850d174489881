"""The one place where blocking SDK calls (Docker, NVML) leave the event loop.

A single shared pool, sized so that one user's slow call never makes another
user's spawn wait for a free worker (stock DockerSpawner uses one thread).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MAX_BLOCKING_WORKERS = 64
_pool: ThreadPoolExecutor | None = None


def blocking_pool() -> ThreadPoolExecutor:
    """The shared pool itself, for libraries that want an Executor object."""
    return _executor()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(
            max_workers=MAX_BLOCKING_WORKERS, thread_name_prefix="kernelhub-blocking"
        )
    return _pool


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` on the shared pool and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(fn, *args, **kwargs))
