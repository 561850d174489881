"""This runtime's resources for the notebook's Resources panel: `GET {base_url}kernelhub/resources`.

    {"memory": {"used", "limit", "source"}, "cpu": {"used", "limit", "source"},
     "drive": {"path", "used", "complete", "free", "total"},
     "gpus": [{"index", "uuid", "name", "utilization", "memory_used", "memory_total"}],
     "gpu_problem": "", "time": ISO 8601 UTC}

Memory and CPU are this runtime's control group's (what its limits apply to, and what
``docker stats`` shows), not the host's totals. A runtime that cannot read its group
(kernelhub's local runtimes: their bubblewrap sandbox mounts no cgroupfs) counts its
own process tree instead, against the limits JupyterHub's spawner advertises in
MEM_LIMIT and CPU_LIMIT. GPUs come from NVML, lazily; a CPU runtime says nothing of
them. Nothing here raises for a missing file: a poller must never break the page.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from kernelhub_snippets.errors import error_json
from kernelhub_snippets.runtime_usage import (
    CgroupReader,
    DriveUse,
    GpuReader,
    Reading,
    drive_usage,
    process_tree,
)

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp


AUTH_RESOURCE = "kernelhub-snippets"  # like the notices: this extension's data
SETTINGS_KEY = "kernelhub_resources"
MIN_CPU_INTERVAL = 1.0  # seconds: two tabs polling together must not divide by ~0
DRIVE_CACHE_SECONDS = 60.0


class Resources:
    """Samples everything the endpoint answers; keeps what must outlive a request
    (the previous CPU sample, the drive's cached size, NVML's state)."""

    def __init__(
        self,
        cgroups: CgroupReader | None = None,
        gpus: GpuReader | None = None,
        drive: Path | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = env if env is not None else os.environ
        self.cgroups = cgroups or CgroupReader()
        self.gpus = gpus or GpuReader(env=self.env)
        # the drive is the home directory in both kinds of runtime (spawner/*.py)
        self.drive = drive or Path(self.env.get("KERNELHUB_DRIVE_PATH") or Path.home())
        self.clock = clock
        self._cpu_sample: tuple[float, float, str] | None = None  # (seconds, when, source)
        self._cpu_used: float | None = None
        self._drive = DriveUse()
        self._drive_lock = asyncio.Lock()

    def cpu_used(self, reading: Reading) -> float | None:
        """Cores in use since the previous sample (None at the first, or after the
        source changed)."""
        now = self.clock()
        previous = self._cpu_sample
        if previous is not None and previous[2] == reading.source:
            if now - previous[1] < MIN_CPU_INTERVAL:
                return self._cpu_used
            # processes that ended take their CPU time with them: never negative
            self._cpu_used = max(0.0, (reading.value - previous[0]) / (now - previous[1]))
        else:
            self._cpu_used = None
        self._cpu_sample = (reading.value, now, reading.source)
        return self._cpu_used

    def sample_blocking(self) -> dict[str, Any]:
        """Everything but the drive's walk (done apart, and cached)."""
        memory, cpu = self.cgroups.memory(), self.cgroups.cpu()
        if memory is None or cpu is None:
            tree_memory, tree_cpu = process_tree(self.env)
            memory, cpu = memory or tree_memory, cpu or tree_cpu
        gpus, problem = self.gpus.read()
        limit = int(memory.limit) if memory.limit is not None else None
        return {
            "memory": {"used": int(memory.value), "limit": limit, "source": memory.source},
            "cpu": {"used": self.cpu_used(cpu), "limit": cpu.limit, "source": cpu.source},
            "gpus": gpus,
            "gpu_problem": problem,
        }

    def disk_blocking(self) -> dict[str, Any]:
        try:
            stats = os.statvfs(self.drive)
            free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
        except OSError:
            free = total = 0
        return {"path": str(self.drive), "free": free, "total": total}

    async def drive_use(self) -> DriveUse:
        async with self._drive_lock:  # one walk at a time; the others wait for it
            if self.clock() - self._drive.measured_at >= DRIVE_CACHE_SECONDS:
                loop = asyncio.get_running_loop()
                self._drive = await loop.run_in_executor(None, drive_usage, self.drive)
                self._drive.measured_at = self.clock()
            return self._drive

    async def sample(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, self.sample_blocking)
        disk = await loop.run_in_executor(None, self.disk_blocking)
        use = await self.drive_use()
        answer["drive"] = {**disk, "used": use.used, "complete": use.complete}
        answer["time"] = datetime.now(UTC).isoformat(timespec="seconds")
        return answer


class ResourcesHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """{"status", "message"}; never a traceback (details go to the server log)."""
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        unexpected = "Cannot read this runtime's resources right now"
        self.finish(error_json(status_code, kwargs.get("exc_info"), unexpected))

    @web.authenticated
    @authorized
    async def get(self) -> None:
        resources: Resources = self.settings[SETTINGS_KEY]
        answer = await resources.sample()
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(answer))


def load_resources(serverapp: ServerApp, resources: Resources | None = None) -> None:
    """Route ``kernelhub/resources``; ``resources`` replaces the real sampler (tests)."""
    web_app = serverapp.web_app
    web_app.settings[SETTINGS_KEY] = resources or Resources()
    path = url_path_join(web_app.settings["base_url"], "kernelhub", "resources")
    web_app.add_handlers(".*$", [(path, ResourcesHandler)])
