"""GPU inventory (what the host has) and exclusive assignment (who holds what).

NVML is the only way kernelhub looks at GPUs, and this module is its only
caller on the hub side. Hosts where the hub cannot see NVML (the hub in a
container without the driver, say) configure the inventory instead.

On a cluster the inventory is per node (``nodes``, or what each node's agent
discovered through ``load_nodes``); node_gpus.py holds that half, and ``place``
hands out a node and GPUs on it. Single-host spawners keep ``assign``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Dict, List, TraitError, Unicode, default, validate
from traitlets.config import SingletonConfigurable

from .node_gpus import NodeGpuPool, Placement, check_node_gpus, gpu_key

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

    nodes = Dict(
        help="""GPU ids per cluster node, for a spawner that runs runtimes on several
        nodes (Docker Swarm): {"node-a": ["0", "1"], "node-b": ["0"]}, keyed by the
        node's hostname. All of a runtime's GPUs are on one node. Instead of
        `devices`, not with it; empty (the default) on a single host, or where each
        node's agent reports its GPUs.""",
    ).tag(config=True)

    use_nvml = Bool(
        True,
        help="Discover GPUs through NVML when `devices` is empty.",
    ).tag(config=True)

    discovery: Discovery | None = None
    # gpu id -> holders (runtime keys such as "alice/" or "alice/exp1")
    _holders: dict[str, set[str]]
    _shared: dict[str, bool]
    # set once GPUs are known per node; then it answers instead of _holders
    _pool: NodeGpuPool | None = None

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
        if proposal.value and self.nodes:
            raise TraitError(BOTH_DEVICES_AND_NODES)
        return list(proposal.value)

    @validate("nodes")
    def _check_nodes(self, proposal: Any) -> dict[str, list[str]]:
        try:
            nodes = check_node_gpus(proposal.value)
        except ValueError as e:
            raise TraitError(f"GpuInventory.nodes: {e}") from None
        if nodes and self.devices:
            raise TraitError(BOTH_DEVICES_AND_NODES)
        return nodes

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._holders = {}
        self._shared = {}

    def load(self, discovery: Discovery | None = None) -> Discovery:
        """Fix the inventory: the configured devices, else ``discovery`` (from NVML)."""
        if self.nodes:
            configured = {n: [GpuDevice(gid) for gid in ids] for n, ids in self.nodes.items()}
            return self.load_nodes(configured, "configuration")
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

    def load_nodes(
        self,
        found: Mapping[str, Iterable[GpuDevice]],
        source: str = "node agents",
        problem: str = "",
    ) -> Discovery:
        """Know GPUs per node: {node: [GpuDevice, ...]}, e.g. each node's NVML discovery.

        Call it again when a node reports anew; assignments are kept. ValueError
        for a bad report (it names the node) or when `devices` is configured.
        """
        if self.devices:
            raise ValueError(BOTH_DEVICES_AND_NODES)
        devices = {node: list(gpus) for node, gpus in found.items()}
        if self._pool is None:
            self._pool = NodeGpuPool()
        self._pool.set_nodes({node: [d.id for d in gpus] for node, gpus in devices.items()})
        listed = tuple(
            GpuDevice(gpu_key(node, d.id), d.name, d.memory_mib)
            for node, gpus in devices.items()
            for d in gpus
        )
        if not listed and not problem:
            problem = "no node reported a GPU"
        self.discovery = Discovery(listed, source, problem)
        return self.discovery

    @property
    def per_node(self) -> bool:
        """Whether GPUs are known per node (a cluster), so ``place`` must be used."""
        return self._pool is not None

    @property
    def ids(self) -> list[str]:
        """Every GPU, as "node/id" when per node."""
        return [d.id for d in self.discovery.devices] if self.discovery else []

    def free_count(self, sharing: bool = False) -> int:
        if self._pool is not None:
            return self._pool.free_count(sharing)
        return sum(1 for gid in self.ids if self._can_take(gid, sharing))

    def _can_take(self, gpu_id: str, sharing: bool) -> bool:
        holders = self._holders.get(gpu_id, set())
        return not holders or (sharing and self._shared.get(gpu_id, False))

    def unavailable_reason(self, count: int, sharing: bool = False) -> str:
        """Why ``count`` GPUs cannot be handed out now; '' when they can."""
        if count == 0:
            return ""
        if self._pool is not None:
            problem = self.discovery.problem if self.discovery else ""
            return self._pool.unavailable_reason(count, sharing, problem)
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
        if self._pool is not None:
            # ids alone would not say which node's GPUs they are
            raise RuntimeError(
                "GPUs are configured per node (GpuInventory.nodes): a spawner "
                "must take them with place(), which names the node"
            )
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

    def place(
        self, holder: str, count: int, sharing: bool = False, only_node: str = ""
    ) -> Placement:
        """Take ``count`` GPUs, all on one node, for ``holder``; NoFreeGpu saying why not.
        ``only_node``: GPUs of that node only (where the user's node-local drive is).

        Synchronous, like ``assign``: no other request runs between the check and
        the take. On a single host the node is "".
        """
        if self._pool is None:
            return Placement("", tuple(self.assign(holder, count, sharing)))
        if count == 0:
            return Placement("", ())
        reason = self.unavailable_reason(count, sharing)
        placement = None if reason else self._pool.take(holder, count, sharing, only_node)
        if placement is None and not reason and only_node:
            free = "no free GPU" if count == 1 else f"fewer than {count} free GPUs"
            reason = (
                f"your drive is on node {only_node} (drives are node-local here), which has "
                f"{free} now; try again later"
            )
        if placement is None:
            raise NoFreeGpu(reason or f"no node has {count} free GPUs together")
        log.info("GPU(s) %s assigned to %s", placement, holder)
        return placement

    def restore(
        self, holder: str, gpu_ids: Iterable[str], sharing: bool = False, node: str = ""
    ) -> None:
        """Re-record an assignment found in spawner state after a hub restart."""
        if self._pool is not None:
            self._pool.restore(holder, node, gpu_ids, sharing)
            return
        if node:
            # another node's GPU ids would block this host's GPUs of the same name
            log.warning("%s held GPUs on node %s; this hub runs one host only", holder, node)
            return
        for gid in gpu_ids:
            self._holders.setdefault(gid, set()).add(holder)
            self._shared[gid] = sharing

    def restore_placement(self, holder: str, placement: Placement, sharing: bool = False) -> None:
        """``restore`` for what ``placement_from_state`` read from spawner state."""
        self.restore(holder, placement.gpu_ids, sharing, node=placement.node)

    def release(self, holder: str) -> list[str]:
        """Free what ``holder`` held; the GPUs freed ("node/id" when per node)."""
        if self._pool is not None:
            keys = [gpu_key(*key) for key in self._pool.release(holder)]
            if keys:
                log.info("GPU(s) %s released by %s", ",".join(keys), holder)
            return keys
        released = []
        for gid, holders in self._holders.items():
            if holder in holders:
                holders.discard(holder)
                released.append(gid)
        if released:
            log.info("GPU(s) %s released by %s", ",".join(released), holder)
        return released

    def holders(self) -> dict[str, list[str]]:
        """GPU ("node/id" when per node) -> its holders."""
        if self._pool is not None:
            return self._pool.holders()
        return {gid: sorted(h) for gid, h in self._holders.items()}

    def placements(self) -> dict[str, Placement]:
        """Holder -> where its GPUs are (node "" on a single host)."""
        if self._pool is not None:
            return self._pool.placements()
        by_holder: dict[str, list[str]] = {}
        for gid, holders in self._holders.items():
            for holder in holders:
                by_holder.setdefault(holder, []).append(gid)
        return {h: Placement("", tuple(ids)) for h, ids in sorted(by_holder.items())}


BOTH_DEVICES_AND_NODES = (
    "GpuInventory.devices (one host's GPUs) and GpuInventory.nodes (GPUs per "
    "cluster node) are alternatives: set one of them"
)


class NoFreeGpu(RuntimeError):
    """Raised by GpuInventory.assign when the request cannot be met."""
