"""A real multi-node Docker Swarm for tests: the host's engine is the manager, and each
worker is a Docker engine in a (nearly) privileged container (images/swarm-node) on a bridge
network this harness creates; the runtime images reach the workers through a registry
container (images/registry), as in a deployment (README: Scaling out).

    with swarm_cluster("khsw", workers=2, images=["kernelhub/runtime-test:latest"]) as c:
        c.manager.services.create(c.image("kernelhub/runtime-test:latest"), ...)

Image names. Every node must resolve a service's image name to the same registry. The
host engine cannot be told to trust a plain-HTTP registry on the test network (its
configuration is not ours to change), but every engine trusts loopback registries over
HTTP. So the registry is published on the host's 127.0.0.1:PORT, and each worker serves
the same registry on its own 127.0.0.1:PORT (socat, in the node's entrypoint): the name
127.0.0.1:PORT/PREFIX/REPO:TAG works on every node, and the manager can resolve its digest.
The workers also trust GATEWAY:PORT (--insecure-registry), the address of the published
registry on the test network, where a name that is not loopback is wanted.

Everything created carries the label org.kernelhub.test=PREFIX and goes away when the
context ends, on failure and Ctrl-C too; leftovers of a crashed run with the same
prefix are removed first. The host joins no swarm it did not create: a host already in
someone's swarm is refused.

A host is in one swarm at a time, so clusters never overlap: ``swarm_cluster`` waits for
an exclusive lock (``LOCK_PATH``) that a concurrent run (another pytest, a benchmark)
holds until its cluster is torn down.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.models.containers import Container
from docker.models.nodes import Node
from swarm_nodes import (
    LABEL,
    NODE_IMAGE,
    REGISTRY_IMAGE,
    SwarmClusterError,
    Worker,
    build_images,
    create_network,
    init_swarm,
    join_workers,
    pull_images,
    push_images,
    start_registry,
    start_worker,
)

__all__ = [
    "LABEL",
    "Cluster",
    "SwarmClusterError",
    "Worker",
    "cleanup",
    "no_swarm_running",
    "swarm_cluster",
]

LOCK_PATH = Path(tempfile.gettempdir()) / "kernelhub-swarm-harness.lock"
_lock_depth = 0  # how often this process holds the lock (flock is per open file)


@dataclass
class Cluster:
    prefix: str
    manager: docker.DockerClient  # the host's engine, the swarm's only manager
    network: str
    subnet: str
    gateway: str  # the host's address on the test network; the manager listens here
    registry: str  # 127.0.0.1:PORT, the registry every node reaches under that name
    registry_on_network: str  # GATEWAY:PORT, the same registry as workers see it
    images: dict[str, str] = field(default_factory=dict)  # local name -> registry name
    digests: dict[str, str] = field(default_factory=dict)  # local name -> sha256:...
    workers: list[Worker] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    # a host folder every worker mounts at the same path: the cluster's shared filesystem
    # (what NFS or CephFS is in a deployment), "" when not asked for
    shared_dir: str = ""
    initialised_swarm: bool = False
    _gwbridge_existed: bool = True
    _clients: dict[int, docker.DockerClient] = field(default_factory=dict)

    @property
    def manager_name(self) -> str:
        return str(self.manager.info()["Name"])

    @property
    def node_names(self) -> list[str]:
        """Swarm node hostnames: the manager's first, then the workers'."""
        return [self.manager_name, *(w.name for w in self.workers)]

    def image(self, name: str) -> str:
        """The registry name of ``name`` (one of ``images``), the same on every node."""
        return self.images[name]

    def worker(self, n: int) -> Worker:
        return self.workers[n - 1]

    def worker_client(self, n: int) -> docker.DockerClient:
        """An SDK client of worker ``n``'s engine (1-based), through its unix socket."""
        if n not in self._clients:
            self._clients[n] = docker.DockerClient(base_url=self.worker(n).base_url, timeout=120)
        return self._clients[n]

    def node(self, name: str) -> Node:
        """The swarm node whose hostname (or id) is ``name``."""
        for node in self.manager.nodes.list():
            if name in (node.id, node.attrs["Description"]["Hostname"]):
                return node
        raise KeyError(f"no swarm node {name!r}")

    def set_availability(self, name: str, availability: str) -> None:
        node = self.node(name)
        spec = dict(node.attrs["Spec"], Availability=availability)
        node.update(spec)

    def drain(self, name: str) -> None:
        """Drain node ``name``: swarm stops its tasks (and reschedules replicas elsewhere)."""
        self.set_availability(name, "drain")

    def activate(self, name: str) -> None:
        self.set_availability(name, "active")

    def add_worker(self, prepull: bool = False) -> Worker:
        """Start one more worker and join it (a node that joins late)."""
        started = time.monotonic()
        worker = start_worker(self, len(self.workers) + 1)
        join_workers(self, [worker])
        if prepull:
            pull_images(self, [worker])
        self.timings[f"add {worker.name}"] = time.monotonic() - started
        return worker

    def labels(self, **more: str) -> dict[str, str]:
        """Labels for what a test creates, so that teardown removes it."""
        return {LABEL: self.prefix, **more}

    def logs(self, tail: int = 150) -> str:
        """The nodes, this cluster's services and tasks, and the containers' logs."""
        out: list[str] = []
        with suppress(docker.errors.APIError):
            for node in self.manager.nodes.list():
                desc, status = node.attrs["Description"], node.attrs["Status"]
                out.append(
                    f"node {desc['Hostname']} {node.attrs['Spec'].get('Role')} "
                    f"{status.get('State')} {node.attrs['Spec'].get('Availability')}"
                )
            for service in self.manager.services.list(filters={"label": f"{LABEL}={self.prefix}"}):
                for task in service.tasks():
                    st = task.get("Status", {})
                    out.append(
                        f"task {service.name} node={task.get('NodeID', '')[:12]} "
                        f"{st.get('State')} {st.get('Err', '')} {st.get('Message', '')}"
                    )
        for container in _containers(self.manager, self.prefix):
            text = container.logs(tail=tail).decode(errors="replace")
            out.append(f"----- {container.name} ({container.status}) -----\n{text}")
        return "\n".join(out)


@contextmanager
def swarm_cluster(
    prefix: str,
    workers: int = 2,
    images: list[str] | None = None,
    prepull: bool = False,
    shared_dir: bool = False,
) -> Iterator[Cluster]:
    """A swarm of the host (manager) and ``workers`` worker engines, with ``images``
    pushed to the cluster's registry (``prepull``: and pulled on every worker);
    ``shared_dir``: a host folder mounted on every worker at the same path
    (``Cluster.shared_dir``)."""
    with (
        no_swarm_running(),
        _cluster(prefix, workers, images, prepull, shared_dir) as cluster,
    ):
        yield cluster


@contextmanager
def no_swarm_running() -> Iterator[None]:
    """While held, no other run of this harness has a swarm on the host: the lock that
    ``swarm_cluster`` holds; the kernel drops it if its process dies. Reentrant within
    a process: a test may call ``swarm_cluster`` inside a cluster (and be refused)."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    path = LOCK_PATH
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"swarm_cluster: waiting for another run's swarm ({path})", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _cluster(
    prefix: str, workers: int, images: list[str] | None, prepull: bool, shared_dir: bool
) -> Iterator[Cluster]:
    manager = docker.from_env(timeout=300)
    cleanup(manager, prefix)  # a crashed run's leftovers
    info = manager.info()["Swarm"]
    if info.get("LocalNodeState") != "inactive":
        raise SwarmClusterError(
            f"the host's engine is already in a swarm ({info.get('LocalNodeState')}, node "
            f"{info.get('NodeID')}): the tests need one of their own; leave it first "
            "(`docker swarm leave`) if it is a leftover"
        )
    cluster = Cluster(prefix=prefix, manager=manager, **create_network(manager, prefix))
    if shared_dir:  # removed with the cluster (teardown's kernelhub-swarm-PREFIX-*)
        cluster.shared_dir = tempfile.mkdtemp(prefix=f"kernelhub-swarm-{prefix}-shared-")
    try:
        build_images(cluster, [NODE_IMAGE, REGISTRY_IMAGE])
        init_swarm(cluster)
        start_registry(cluster)
        push_images(cluster, list(images or []))
        started = time.monotonic()
        new = [start_worker(cluster, n) for n in range(1, workers + 1)]
        join_workers(cluster, new)
        cluster.timings["workers"] = time.monotonic() - started
        if prepull:
            pull_images(cluster, new)
    except BaseException:
        teardown(cluster)
        raise
    try:
        yield cluster
    finally:
        teardown(cluster)


# ---- tearing it down ------------------------------------------------------------------


def _containers(manager: docker.DockerClient, prefix: str) -> list[Container]:
    return list(manager.containers.list(all=True, filters={"label": f"{LABEL}={prefix}"}))


def teardown(cluster: Cluster) -> None:
    """Remove everything the cluster made; safe to call twice."""
    started = time.monotonic()
    for client in cluster._clients.values():
        client.close()
    cluster._clients.clear()
    cleanup(cluster.manager, cluster.prefix, cluster.initialised_swarm, cluster._gwbridge_existed)
    for worker in cluster.workers:
        shutil.rmtree(worker.socket_dir, ignore_errors=True)
    cluster.initialised_swarm = False
    cluster.timings["teardown"] = time.monotonic() - started


def cleanup(
    manager: docker.DockerClient,
    prefix: str,
    leave_swarm: bool = False,
    keep_gwbridge: bool = False,
) -> None:
    """Remove what is labelled ``prefix``: services, worker nodes and containers, volumes,
    networks, registry tags (never the images); the host leaves the swarm when
    ``leave_swarm`` or the swarm is labelled ``prefix`` (a crashed run of this harness's),
    and then docker_gwbridge, which swarm mode makes and leaves behind, unless
    ``keep_gwbridge`` (the host had it before)."""
    swarm = manager.info()["Swarm"]
    ours = False
    if swarm.get("ControlAvailable"):
        manager.swarm.reload()
        ours = manager.swarm.attrs.get("Spec", {}).get("Labels", {}).get(LABEL) == prefix
    # someone else's swarm is never touched, not even what carries our label
    manage = bool(swarm.get("ControlAvailable")) and (ours or leave_swarm)
    if manage:
        for service in manager.services.list(filters={"label": f"{LABEL}={prefix}"}):
            with suppress(docker.errors.NotFound):
                service.remove()
    containers = _containers(manager, prefix)
    for container in containers:
        if container.status == "running" and "worker" in container.name:
            with suppress(docker.errors.APIError):  # a clean goodbye; node rm follows
                container.exec_run(["timeout", "10", "docker", "swarm", "leave", "--force"])
    if manage:
        for node in manager.nodes.list():
            if node.attrs["Description"].get("Hostname", "").startswith(f"{prefix}-worker-"):
                with suppress(docker.errors.APIError):
                    node.remove(force=True)
    for container in containers:
        with suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    left: docker.errors.APIError | None = None
    if (leave_swarm or ours) and swarm.get("LocalNodeState") != "inactive":
        try:
            manager.swarm.leave(force=True)
        except docker.errors.APIError as e:
            left = e  # the rest is removed all the same
        for network in [] if keep_gwbridge else manager.networks.list(names=["docker_gwbridge"]):
            with suppress(docker.errors.APIError):  # in use: someone else's containers
                network.remove()
    for volume in manager.volumes.list(filters={"label": f"{LABEL}={prefix}"}):
        with suppress(docker.errors.NotFound):
            volume.remove(force=True)
    for network in manager.networks.list(filters={"label": f"{LABEL}={prefix}"}):
        with suppress(docker.errors.NotFound):
            network.remove()
    ours_tag = re.compile(rf"127\.0\.0\.1:\d+/{re.escape(prefix)}/")
    for image in manager.images.list():
        for tag in image.tags:
            if ours_tag.match(tag):
                with suppress(docker.errors.APIError):
                    manager.images.remove(tag, noprune=True)
    for stale in Path(tempfile.gettempdir()).glob(f"kernelhub-swarm-{prefix}-*"):
        if stale.is_dir() and not stale.is_symlink() and stale.stat().st_uid == os.getuid():
            shutil.rmtree(stale, ignore_errors=True)
    if left is not None:
        raise SwarmClusterError(f"the host could not leave the test swarm: {left}")
