"""The pieces of tests/swarm_cluster.py's cluster: its network, the registry and the
images pushed to it, and the worker engines (images/swarm-node) joined to the host's
swarm. swarm_cluster() puts them together and takes them apart."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import docker
import httpx
from docker.models.containers import Container
from harness import KERNELHUB, wait_until

if TYPE_CHECKING:
    from swarm_cluster import Cluster

LABEL = "org.kernelhub.test"
NODE_IMAGE = "kernelhub/swarm-node:latest"
REGISTRY_IMAGE = "kernelhub/registry:latest"
# the test network: the first of these /24s that overlaps nothing the host routes or
# the engine has; the swarm's overlay networks take /24s from the pool after it
SUBNETS = [f"172.31.{n}.0/24" for n in range(250, 256)]
OVERLAY_POOL = "172.31.224.0/20"
REGISTRY_PORT = 5000  # taken when free on the host's loopback, else any free port
NODE_SOCKET_DIR = "/run/kernelhub-node"  # in a worker: where its second socket is
READY_TIMEOUT = 90.0
# Capabilities every engine knows (Linux 0..37, CHOWN..AUDIT_READ), by bit number.
CAPABILITIES = [
    *("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID"),
    *("SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST"),
    *("NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO"),
    *("SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE"),
    *("SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE"),
    *("AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM"),
    *("BLOCK_SUSPEND", "AUDIT_READ"),
]


def _node_privileges() -> dict[str, object]:
    """What a worker engine needs: --privileged, less what the host cannot grant.

    An engine whose own bounding set lacks a capability (one running in a container
    itself, as on this project's CI machines) fails every --privileged container
    ("unable to apply caps"). So a worker gets each capability this process holds (the
    engine is on this machine: the harness bind-mounts folders into its containers),
    and no seccomp or AppArmor profile; the node's entrypoint remounts /sys, /proc/sys
    and the cgroup hierarchies read-write.
    """
    status = Path("/proc/self/status").read_text()
    bounding = int(status.split("CapBnd:")[1].split()[0], 16)
    return {
        "cap_add": [name for bit, name in enumerate(CAPABILITIES) if bounding >> bit & 1],
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    }


NODE_PRIVILEGES = _node_privileges()


class NetworkFields(TypedDict):
    network: str
    subnet: str
    gateway: str
    registry: str
    registry_on_network: str


class SwarmClusterError(Exception):
    """The cluster could not be built; the message says why (with the nodes' logs)."""


@dataclass
class Worker:
    index: int  # 1, 2, ...
    name: str  # container name = hostname = swarm node hostname
    ip: str
    socket_dir: Path  # on the host: the worker engine's socket is socket_dir/docker.sock
    node_id: str = ""

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_dir}/docker.sock"


def create_network(manager: docker.DockerClient, prefix: str) -> NetworkFields:
    """The test network, on the first free subnet: the fields of its Cluster."""
    taken = [ipaddress.ip_network(s) for s in _used_subnets(manager)]
    for candidate in SUBNETS:
        subnet = ipaddress.ip_network(candidate)
        if not any(subnet.overlaps(other) for other in taken):
            break
    else:
        raise SwarmClusterError(f"no free test subnet among {', '.join(SUBNETS)}")
    gateway = str(subnet.network_address + 1)
    ipam = docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)]
    )
    network = f"{prefix}-net"
    manager.networks.create(network, driver="bridge", ipam=ipam, labels={LABEL: prefix})
    port = REGISTRY_PORT if _port_free(REGISTRY_PORT) else _free_port()
    return NetworkFields(
        network=network,
        subnet=str(subnet),
        gateway=gateway,
        registry=f"127.0.0.1:{port}",
        registry_on_network=f"{gateway}:{port}",
    )


def _used_subnets(manager: docker.DockerClient) -> list[str]:
    used = [
        config["Subnet"]
        for network in manager.networks.list(greedy=True)
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []
        if "Subnet" in config and ":" not in config["Subnet"]
    ]
    used.append(OVERLAY_POOL)
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:  # the host's routes
        fields = line.split()
        dest, mask = (socket.inet_ntoa(int(x, 16).to_bytes(4, "little")) for x in fields[1:8:6])
        if dest != "0.0.0.0":
            used.append(str(ipaddress.ip_network(f"{dest}/{mask}", strict=False)))
    return used


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_images(cluster: Cluster, tags: list[str]) -> None:
    """`kernelhub images build` each (it skips images that are up to date)."""
    started = time.monotonic()
    for tag in tags:
        name = tag.split("/", 1)[1].split(":", 1)[0]
        done = subprocess.run(
            [KERNELHUB, "images", "build", name],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise SwarmClusterError(
                f"`kernelhub images build {name}` failed:\n{(done.stdout + done.stderr)[-8000:]}"
            )
    cluster.timings["build"] = time.monotonic() - started


def init_swarm(cluster: Cluster) -> None:
    cluster._gwbridge_existed = bool(cluster.manager.networks.list(names=["docker_gwbridge"]))
    # listening on the test network only: the manager's port is not opened on the host's
    # other interfaces; the label tells a later run that this swarm is a leftover of ours
    cluster.manager.swarm.init(
        advertise_addr=cluster.gateway,
        listen_addr=f"{cluster.gateway}:2377",
        data_path_addr=cluster.gateway,
        default_addr_pool=[OVERLAY_POOL],
        subnet_size=24,
        labels={LABEL: cluster.prefix},
        task_history_retention_limit=2,
    )
    cluster.initialised_swarm = True


def start_registry(cluster: Cluster) -> None:
    started = time.monotonic()
    prefix, port = cluster.prefix, int(cluster.registry.rsplit(":", 1)[1])
    volume = cluster.manager.volumes.create(f"{prefix}-registry-data", labels={LABEL: prefix})
    ip = _address(cluster, 2)
    _create_on_network(
        cluster,
        ip,
        image=REGISTRY_IMAGE,
        name=f"{prefix}-registry",
        hostname=f"{prefix}-registry",
        labels={LABEL: prefix},
        volumes={volume.name: {"bind": "/var/lib/docker-registry", "mode": "rw"}},
        ports={"5000/tcp": [("127.0.0.1", port), (cluster.gateway, port)]},
    ).start()

    def answers() -> bool:
        with suppress(httpx.HTTPError):
            return httpx.get(f"http://{cluster.registry}/v2/", timeout=2).status_code == 200
        return False

    try:
        wait_until(answers, timeout=30, what="the registry")
    except TimeoutError as e:
        raise SwarmClusterError(f"the registry did not answer:\n{cluster.logs()}") from e
    cluster.timings["registry"] = time.monotonic() - started


def push_images(cluster: Cluster, images: list[str]) -> None:
    started = time.monotonic()
    for local in images:
        repository, sep, tag = local.rpartition(":")
        if not sep or "/" in tag:  # no tag, or the colon of a registry's port
            repository, tag = local, "latest"
        # under the prefix: a crashed run's tags are found by name (tags carry no labels)
        remote = f"{cluster.registry}/{cluster.prefix}/{repository}"
        cluster.manager.images.get(local).tag(remote, tag)
        digest = ""
        for event in cluster.manager.images.push(remote, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise SwarmClusterError(f"pushing {local} to {cluster.registry}: {event['error']}")
            digest = event.get("aux", {}).get("Digest", digest)
        cluster.images[local], cluster.digests[local] = f"{remote}:{tag}", digest
    cluster.timings["push"] = time.monotonic() - started


def _address(cluster: Cluster, host: int) -> str:
    return str(ipaddress.ip_network(cluster.subnet).network_address + host)


def _create_on_network(cluster: Cluster, ip: str, **kwargs: object) -> Container:
    endpoint = cluster.manager.api.create_endpoint_config(ipv4_address=ip)
    return cluster.manager.containers.create(
        network=cluster.network, networking_config={cluster.network: endpoint}, **kwargs
    )


def start_worker(cluster: Cluster, index: int) -> Worker:
    prefix = cluster.prefix
    name = f"{prefix}-worker-{index}"
    socket_dir = Path(tempfile.mkdtemp(prefix=f"kernelhub-swarm-{prefix}-"))
    worker = Worker(index=index, name=name, ip=_address(cluster, 10 + index), socket_dir=socket_dir)
    cluster.workers.append(worker)
    volume = cluster.manager.volumes.create(f"{name}-docker", labels={LABEL: prefix})
    registry_ip, port = _address(cluster, 2), cluster.registry.rsplit(":", 1)[1]
    _create_on_network(
        cluster,
        worker.ip,
        image=NODE_IMAGE,
        name=name,
        hostname=name,
        **NODE_PRIVILEGES,
        labels={LABEL: prefix},
        environment={
            "KERNELHUB_INSECURE_REGISTRIES": cluster.registry_on_network,
            "KERNELHUB_REGISTRY_FORWARD": f"{port}={registry_ip}:5000",
            "KERNELHUB_EXTRA_SOCKET_DIR": NODE_SOCKET_DIR,
            "KERNELHUB_SOCKET_GID": str(os.getgid()),
        },
        volumes={
            volume.name: {"bind": "/var/lib/docker", "mode": "rw"},
            str(socket_dir): {"bind": NODE_SOCKET_DIR, "mode": "rw"},
            **(
                {cluster.shared_dir: {"bind": cluster.shared_dir, "mode": "rw"}}
                if cluster.shared_dir
                else {}
            ),
        },
    ).start()
    return worker


def join_workers(cluster: Cluster, workers: list[Worker]) -> None:
    token = cluster.manager.swarm.attrs["JoinTokens"]["Worker"]  # never printed
    for worker in workers:

        def engine_up(worker: Worker = worker) -> bool:
            # a new client each time: the SDK asks the engine's API version when made
            with suppress(docker.errors.DockerException):
                probe = docker.DockerClient(base_url=worker.base_url, timeout=5)
                try:
                    return bool(probe.ping())
                finally:
                    probe.close()
            return False

        try:
            wait_until(engine_up, timeout=READY_TIMEOUT, what=f"{worker.name}'s engine")
            client = cluster.worker_client(worker.index)
            client.swarm.join(
                remote_addrs=[f"{cluster.gateway}:2377"],
                join_token=token,
                advertise_addr=worker.ip,
                data_path_addr=worker.ip,
            )
            worker.node_id = str(client.info()["Swarm"]["NodeID"])
        except (TimeoutError, docker.errors.DockerException) as e:
            reason = type(e).__name__ if isinstance(e, TimeoutError) else str(e)
            raise SwarmClusterError(
                f"{worker.name} did not join the swarm ({reason}):\n{cluster.logs()}"
            ) from None

    def ready() -> bool:
        states = {n.id: n.attrs["Status"].get("State") for n in cluster.manager.nodes.list()}
        return all(states.get(w.node_id) == "ready" for w in workers)

    try:
        wait_until(ready, timeout=READY_TIMEOUT, interval=0.5, what="the workers to be Ready")
    except TimeoutError:
        raise SwarmClusterError(
            f"workers not Ready after {READY_TIMEOUT:.0f}s:\n{cluster.logs()}"
        ) from None


def pull_images(cluster: Cluster, workers: list[Worker]) -> None:
    """Pull every image on ``workers`` (what swarm does on a task's first start), the
    workers side by side as swarm would."""
    started = time.monotonic()
    clients = [cluster.worker_client(worker.index) for worker in workers]

    def pull(client: docker.DockerClient) -> None:
        for name in cluster.images.values():
            client.images.pull(name)

    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        list(pool.map(pull, clients))  # list(): a failed pull raises here
    cluster.timings["prepull"] = cluster.timings.get("prepull", 0) + time.monotonic() - started
