"""GPU inventory (what the host has) and exclusive assignment (who holds what).

NVML is the only way kernelhub looks at GPUs, and this module is its only
caller on the hub side. Hosts where the hub cannot see NVML (the hub in a
container without the driver, say) configure the inventory instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, List, TraitError, Unicode, default, validate
from traitlets.config import SingletonConfigurable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuDevice:
    id: str
    name: str = "GPU"
    memory_mib: int = 0


@dataclass(frozen=True)
class Discovery:
    devices: tuple[GpuDevice, ...]
    source: str
    problem: str = ""


def discover_with_nvml() -> Discovery:
    """Ask NVML for the host's GPUs; blocking, so call through run_blocking."""
    try:
        import pynvml
    except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
        return Discovery((), "nvml", "nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return Discovery((), "nvml", f"NVML unavailable ({e})")
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            devices.append(GpuDevice(str(index), str(name), int(memory)))
        return Discovery(tuple(devices), "nvml")
    except pynvml.NVMLError as e:
        return Discovery((), "nvml", f"NVML query failed ({e})")
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


class GpuInventory(SingletonConfigurable):
    """The GPUs runtimes may be given, and which runtime holds each one."""

    devices = List(
        Unicode(),
        help="""GPU ids to hand out, as the container runtime and CUDA name them
        (indexes like "0" or UUIDs like "GPU-8f3c..."). Empty (the default) means
        discover them through NVML. Set it where the hub cannot see NVML.""",
    ).tag(config=True)

    use_nvml = Bool(
        True,
        help="Discover GPUs through NVML when `devices` is empty.",
    ).tag(config=True)

    discovery: Discovery | None = None
    # gpu id -> holders (runtime keys such as "alice/" or "alice/exp1")
    _holders: dict[str, set[str]]
    _shared: dict[str, bool]

    @default("devices")
    def _no_configured_devices(self) -> list[str]:
        return []

    @validate("devices")
    def _unique_devices(self, proposal: Any) -> list[str]:
        seen: set[str] = set()
        for device in proposal.value:
            if not device.strip():
                raise TraitError("GpuInventory.devices: GPU ids must not be empty")
            if device in seen:
                raise TraitError(f"GpuInventory.devices lists GPU {device!r} twice")
            seen.add(device)
        return list(proposal.value)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._holders = {}
        self._shared = {}

    def load(self, discovery: Discovery | None = None) -> Discovery:
        """Fix the inventory: the configured devices, else ``discovery`` (from NVML)."""
        if self.devices:
            self.discovery = Discovery(tuple(GpuDevice(d) for d in self.devices), "configuration")
        elif not self.use_nvml:
            self.discovery = Discovery((), "none", "GPU discovery is turned off")
        elif discovery is not None:
            self.discovery = discovery
        else:
            self.discovery = Discovery((), "none", "GPUs have not been discovered")
        for device in self.discovery.devices:
            self._holders.setdefault(device.id, set())
        return self.discovery

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.discovery.devices] if self.discovery else []

    def free_count(self, sharing: bool = False) -> int:
        return sum(1 for gid in self.ids if self._can_take(gid, sharing))

    def _can_take(self, gpu_id: str, sharing: bool) -> bool:
        holders = self._holders.get(gpu_id, set())
        return not holders or (sharing and self._shared.get(gpu_id, False))

    def unavailable_reason(self, count: int, sharing: bool = False) -> str:
        """Why ``count`` GPUs cannot be handed out now; '' when they can."""
        if count == 0:
            return ""
        total = len(self.ids)
        if total == 0:
            problem = self.discovery.problem if self.discovery else "not discovered yet"
            return (
                f"no GPU found on this host: {problem}" if problem else "no GPU found on this host"
            )
        free = self.free_count(sharing)
        if free < count:
            if count > total:
                return f"needs {count} GPUs but this host has {total}"
            if free == 0:
                return f"all GPUs are in use ({total} of {total} taken); try again later"
            return f"needs {count} free GPUs but only {free} of {total} are free; try again later"
        return ""

    def assign(self, holder: str, count: int, sharing: bool = False) -> list[str]:
        """Take ``count`` GPUs for ``holder``; atomic on the event loop (no awaits)."""
        if count == 0:
            return []
        reason = self.unavailable_reason(count, sharing)
        if reason:
            raise NoFreeGpu(reason)
        taken = [gid for gid in self.ids if self._can_take(gid, sharing)][:count]
        for gid in taken:
            self._holders[gid].add(holder)
            self._shared[gid] = sharing
        log.info("GPU(s) %s assigned to %s", ",".join(taken), holder)
        return taken

    def restore(self, holder: str, gpu_ids: Iterable[str], sharing: bool = False) -> None:
        """Re-record an assignment found in spawner state after a hub restart."""
        for gid in gpu_ids:
            self._holders.setdefault(gid, set()).add(holder)
            self._shared[gid] = sharing

    def release(self, holder: str) -> list[str]:
        released = []
        for gid, holders in self._holders.items():
            if holder in holders:
                holders.discard(holder)
                released.append(gid)
        if released:
            log.info("GPU(s) %s released by %s", ",".join(released), holder)
        return released

    def holders(self) -> dict[str, list[str]]:
        return {gid: sorted(h) for gid, h in self._holders.items()}


class NoFreeGpu(RuntimeError):
    """Raised by GpuInventory.assign when the request cannot be met."""
