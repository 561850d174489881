"""GPUs across the nodes of a cluster: which node has which GPU, and who holds each.

A runtime on a cluster (Docker Swarm) is one service pinned to one node, so all
of its GPUs must be on that node: what it is given is a ``Placement``, a node and
GPU ids on it. The same id ("0") names different GPUs on different nodes, so a
GPU is known by (node, id) here, and "node/id" where one string is needed.

Isolation does not come from Swarm's generic resources (the NVIDIA toolkit does
not confine a service to the generic resource it was scheduled on): the spawner
pins the service to ``Placement.node`` and hands it exactly ``Placement.gpu_ids``.
``GpuInventory`` (gpus.py) is the hub's one inventory; it keeps a ``NodeGpuPool``
when GPUs are known per node. Like the single-host inventory, nothing here
awaits: on the hub's one event loop a check and the take that follows it cannot
be interleaved with another request's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# a Swarm node's hostname as placement constraints name it; "/" would make the
# "node/id" form ambiguous, and spaces or quotes would break the constraint
NODE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")

STATE_NODE = "gpu_node"
STATE_IDS = "gpu_ids"


@dataclass(frozen=True)
class Placement:
    """Where a runtime's GPUs are: all on ``node`` ("" on a single host)."""

    node: str
    gpu_ids: tuple[str, ...]

    def __str__(self) -> str:
        ids = ",".join(self.gpu_ids) or "no GPU"
        return f"{self.node}:{ids}" if self.node else ids


def gpu_key(node: str, gpu_id: str) -> str:
    """One string naming GPU ``gpu_id`` of ``node``, as holders() and logs show it."""
    return f"{node}/{gpu_id}"


def check_node_gpus(value: object) -> dict[str, list[str]]:
    """``{node: [gpu id, ...]}`` checked; ValueError naming the node otherwise."""
    if not isinstance(value, Mapping):
        raise ValueError(f"must map node names to lists of GPU ids, not {type(value).__name__}")
    checked: dict[str, list[str]] = {}
    for node, ids in value.items():
        if not isinstance(node, str) or not node:
            raise ValueError(f"node names must be non-empty strings, got {node!r}")
        if not NODE_NAME.fullmatch(node):
            raise ValueError(
                f"node name {node!r} must be a hostname "
                "(letters, digits, '.', '-', '_'; at most 253 characters)"
            )
        if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
            raise ValueError(
                f"node {node!r}: GPU ids must be a list of strings, not {type(ids).__name__}"
            )
        seen: list[str] = []
        for gpu_id in ids:
            if not isinstance(gpu_id, str) or not gpu_id.strip():
                raise ValueError(
                    f"node {node!r}: GPU ids must be non-empty strings, got {gpu_id!r}"
                )
            if gpu_id in seen:
                raise ValueError(f"node {node!r} lists GPU {gpu_id!r} twice")
            seen.append(gpu_id)
        checked[node] = seen
    return checked


def placement_state(placement: Placement | None) -> dict[str, Any]:
    """What a spawner adds to its state so the placement survives a hub restart.

    ``{}`` without GPUs; a single host's placement keeps the old ``{"gpu_ids": [...]}``.
    """
    if placement is None or not placement.gpu_ids:
        return {}
    state: dict[str, Any] = {STATE_IDS: list(placement.gpu_ids)}
    if placement.node:
        state[STATE_NODE] = placement.node
    return state


def placement_from_state(state: Mapping[str, Any]) -> Placement | None:
    """The placement ``placement_state`` saved; None when it held no GPU.

    ValueError for a state that cannot be one: guessing would risk handing a
    GPU in use to a second runtime.
    """
    ids = state.get(STATE_IDS) or []
    node = state.get(STATE_NODE) or ""
    if not ids:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ValueError(f"spawner state: {STATE_IDS} must be a list of GPU ids, got {ids!r}")
    if not isinstance(node, str):
        raise ValueError(f"spawner state: {STATE_NODE} must be a node name, got {node!r}")
    return Placement(node, tuple(ids))


class NodeGpuPool:
    """Every node's GPUs and who holds each; the per-node half of ``GpuInventory``."""

    def __init__(self, nodes: Mapping[str, Iterable[str]] | None = None) -> None:
        self._nodes: dict[str, list[str]] = {}
        # (node, gpu id) -> holders; kept apart from _nodes so that assignments
        # restored before a node's agent reports (or after it re-reports) stay
        self._holders: dict[tuple[str, str], set[str]] = {}
        self._shared: dict[tuple[str, str], bool] = {}
        self.set_nodes(nodes or {})

    def set_nodes(self, nodes: Mapping[str, Iterable[str]]) -> None:
        """Replace what each node has (configuration, or what agents found); holders stay."""
        self._nodes = check_node_gpus(nodes)

    @property
    def nodes(self) -> dict[str, list[str]]:
        return {node: list(ids) for node, ids in self._nodes.items()}

    @property
    def keys(self) -> list[str]:
        return [gpu_key(node, gid) for node, ids in self._nodes.items() for gid in ids]

    def _can_take(self, key: tuple[str, str], sharing: bool) -> bool:
        holders = self._holders.get(key)
        return not holders or (sharing and self._shared.get(key, False))

    def free_on(self, node: str, sharing: bool = False) -> list[str]:
        return [gid for gid in self._nodes.get(node, []) if self._can_take((node, gid), sharing)]

    def free_count(self, sharing: bool = False) -> int:
        return sum(len(self.free_on(node, sharing)) for node in self._nodes)

    def unavailable_reason(self, count: int, sharing: bool = False, problem: str = "") -> str:
        """Why ``count`` GPUs on one node cannot be handed out now; '' when they can."""
        if count == 0:
            return ""
        total = sum(len(ids) for ids in self._nodes.values())
        if total == 0:
            return f"no GPU found on any node: {problem}" if problem else "no GPU found on any node"
        if count > total:
            return f"needs {count} GPUs but the cluster has {total}"
        largest = max(len(ids) for ids in self._nodes.values())
        if count > largest:
            return f"needs {count} GPUs on one node but the largest node has {largest}"
        free = self.free_count(sharing)
        if free == 0:
            return f"all GPUs are in use ({total} of {total} taken); try again later"
        if free < count:
            return f"needs {count} free GPUs but only {free} of {total} are free; try again later"
        most = max(len(self.free_on(node, sharing)) for node in self._nodes)
        if most < count:
            return (
                f"no node has {count} free GPUs together "
                f"(most free on one node: {most}); try again later"
            )
        return ""

    def take(
        self, holder: str, count: int, sharing: bool = False, only_node: str = ""
    ) -> Placement | None:
        """Take ``count`` GPUs on one node for ``holder``; None if no node has them.
        ``only_node``: that node or none (the node holding the user's drive).

        The node with the most free GPUs wins (runtimes spread over the cluster,
        leaving room on the others), ties by node name so the choice is predictable.
        A sharing runtime goes to unheld GPUs first, then to the least shared ones.
        """
        candidates = []
        for node in self._nodes:
            if only_node and node != only_node:
                continue
            free = self.free_on(node, sharing)
            if len(free) >= count:
                sharers = {gid: len(self._holders.get((node, gid), ())) for gid in free}
                # sorted is stable: the node's own order among equally shared GPUs
                free.sort(key=sharers.__getitem__)
                idle = sum(1 for gid in free if not sharers[gid])
                candidates.append((-idle, -len(free), node, free))
        if count <= 0 or not candidates:
            return None
        *_, node, free = min(candidates)
        taken = tuple(free[:count])
        for gid in taken:
            self._holders.setdefault((node, gid), set()).add(holder)
            self._shared[(node, gid)] = sharing
        return Placement(node, taken)

    def restore(
        self, holder: str, node: str, gpu_ids: Iterable[str], sharing: bool = False
    ) -> None:
        """Re-record what ``holder`` held before a hub restart; the runtime is still using it."""
        for gid in gpu_ids:
            key = (node, gid)
            others = self._holders.setdefault(key, set()) - {holder}
            if others and not (sharing and self._shared.get(key, False)):
                # two runtimes really run on this GPU now; recording both keeps it
                # from a third, and the operator has to hear of it
                log.warning(
                    "GPU %s is held by %s and, from saved state, by %s",
                    gpu_key(node, gid),
                    ", ".join(sorted(others)),
                    holder,
                )
            if node not in self._nodes or gid not in self._nodes[node]:
                log.warning(
                    "%s holds GPU %s, which no node reports (yet)", holder, gpu_key(node, gid)
                )
            self._holders[key].add(holder)
            # shared only while every holder agreed to share
            self._shared[key] = (sharing and self._shared.get(key, False)) if others else sharing

    def release(self, holder: str) -> list[tuple[str, str]]:
        released = []
        for key, holders in self._holders.items():
            if holder in holders:
                holders.discard(holder)
                released.append(key)
        return released

    def holders(self) -> dict[str, list[str]]:
        """Map "node/id" to its holders, for every known GPU and every GPU still held."""
        found: dict[str, list[str]] = {key: [] for key in self.keys}
        for (node, gid), holders in self._holders.items():
            if holders:
                found[gpu_key(node, gid)] = sorted(holders)
        return found

    def placements(self) -> dict[str, Placement]:
        """Holder -> where its GPUs are."""
        by_holder: dict[str, tuple[str, list[str]]] = {}
        for (node, gid), holders in self._holders.items():
            for holder in holders:
                by_holder.setdefault(holder, (node, []))[1].append(gid)
        return {h: Placement(node, tuple(ids)) for h, (node, ids) in sorted(by_holder.items())}
