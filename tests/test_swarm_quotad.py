"""The quota daemon on every node of a real swarm, writing into one PostgreSQL store.

A real hub on the host (the manager) runs SwarmRuntimeSpawner with its quota store in a
real PostgreSQL; the socket guard and the quota daemon run as global services of the hub
image, pulled from the cluster's registry, one task of each per node, as the stack file
deploys them: the daemon as kernelhub-quotad (10002) without capabilities or the host's
PID namespace, reading the node's /proc bind-mounted read-only, and the node's engine
through the guard's read-only view on a unix socket that only its user may open (a
node-local volume both services mount). Node-local, each daemon accounts only the
runtimes it finds on its node: a runtime pinned to the worker, burning CPU, has its CPU
time accounted in PostgreSQL by the worker's daemon and never by the manager's.

The runtimes' firewall runs there too, as the stack deploys it: `kernelhub network
lock-runtimes`, global, on the host's network, reading the engine through the same
read-only view. Runtimes share an overlay network (a decoy service on it reaches each
of them: the threat is real), and the hub makes each wait for its lock-down: on
either node they reach the hub, never each other nor the decoy nor the node.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
import docker.errors
import pytest
from docker.models.services import Service
from docker.types import Mount, RestartPolicy, SecretReference, ServiceMode
from harness import HubProcess, PostgresCluster, free_port, start_runtime, stop_all_runtimes
from harness import wait_until as wait_for
from kernels import RuntimeClient
from swarm_cluster import Cluster, swarm_cluster

from kernelhub.contract import QUOTA_DB_ENV, USER_LABEL
from kernelhub.quotas.store import QuotaStore

# the cluster (another run's may hold the host's swarm first), the hub image pushed and
# pulled, then the runtime: well past the default per-test limit
pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow, pytest.mark.timeout(1500)]

PREFIX = "khswq"
RUNTIME_IMAGE = "kernelhub/runtime-test:latest"
HUB_IMAGE = "kernelhub/hub:latest"
USER = f"{PREFIX}ada"  # no other run's runtime on the host carries this name
QUOTAD_UID = "10002"
GUARD_DIR = "/run/kernelhub-guard"  # a node-local volume, in the guard and the daemon
READ_ONLY_SOCKET = f"{GUARD_DIR}/quotad.sock"
TOKEN = secrets.token_hex(24)  # the daemons' hub token (never printed)
GUARD_COMMAND = [
    "kernelhub-socket-guard", "--listen", f"unix:{GUARD_DIR}/engine.sock",
    "--read-only-listen", f"unix:{READ_ONLY_SOCKET}", "--unix-mode", "660",
]  # fmt: skip
# quick cycles for the test; the mining detector is test_quotad_mining.py's
QUOTAD_COMMAND = [
    "python3", "-m", "kernelhub.quotas.service", "--interval", "1",
    "--process-interval", "1", "--account-period", "0", "--no-mining-detector",
]  # fmt: skip
LOCK_COMMAND = ["kernelhub", "network", "lock-runtimes", "--proc=/host/proc", "--interval=0.2"]
RUNTIMES_NETWORK = f"{PREFIX}-runtimes"
DECOY_PORT = 9000
# connect to HOST:PORT; print "open" or the error's name (refused, unreachable, timeout)
PROBE = """import socket
def probe(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except OSError as e:
        return type(e).__name__
"""
LISTENER = f"""import socket
s = socket.socket()
s.bind(("0.0.0.0", {DECOY_PORT}))
s.listen(16)
while True:
    s.accept()[0].close()
"""
BURN = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'while True: pass'])"


class ClusterPostgres(PostgresCluster):
    """PostgreSQL on loopback and on the cluster's gateway, where every node's daemon
    reaches it; it trusts the cluster's subnet (the test's own network) and loopback."""

    def __init__(self, port: int, gateway: str, subnet: str) -> None:
        super().__init__(port)
        self.gateway, self.subnet = gateway, subnet

    def start(self) -> None:  # PostgresCluster.start, listening on the gateway too
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres")
        with (self.data / "pg_hba.conf").open("a") as hba:
            # the workers, and the manager's own addresses (its daemon's, host-networked)
            hba.write(f"host all all {self.subnet} trust\nhost all all samehost trust\n")
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1,{self.gateway}"
        log = str(self.base / "server.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"
        )


@dataclass
class Store:
    local_url: str  # the hub's, on loopback
    cluster_url: str  # the daemons', on the gateway


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    images = [RUNTIME_IMAGE, HUB_IMAGE]
    with swarm_cluster(PREFIX, workers=1, images=images, prepull=True, shared_dir=True) as c:
        network = c.manager.networks.create(RUNTIMES_NETWORK, driver="overlay", labels=c.labels())
        try:
            yield c
        finally:
            network.remove()


@pytest.fixture(scope="module")
def store(cluster: Cluster) -> Iterator[Store]:
    postgres = ClusterPostgres(free_port(), cluster.gateway, cluster.subnet)
    postgres.start()
    try:
        url = postgres.create_database("kernelhub").replace("postgresql:", "postgresql+psycopg:")
        QuotaStore.open(url).close()  # migrated once, before the hub and daemons open it
        yield Store(url, url.replace("@127.0.0.1:", f"@{cluster.gateway}:"))
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def hub(cluster: Cluster, store: Store, hub_factory: Callable[..., HubProcess]) -> HubProcess:
    config = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "gpu", "display_name": "GPU", "image": "{cluster.image(RUNTIME_IMAGE)}",
      "gpus": 1, "mem_limit": "256M", "cpu_limit": 0.5}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 1
# each node's GPUs, as a per-node agent would report them: a GPU runtime is pinned to its
# GPU's node, the first to the worker (the most free GPUs), the next ones to either
c.GpuInventory.nodes = {{"{PREFIX}-worker-1": ["0", "1"], "{cluster.manager_name}": ["0"]}}
c.SwarmRuntimeSpawner.prefix = "{PREFIX}"
# on one overlay, as in the stack; never running a user's code before it is firewalled
c.SwarmRuntimeSpawner.network_name = "{RUNTIMES_NETWORK}"
c.SwarmRuntimeSpawner.await_network_lockdown = 60
c.SwarmRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.SwarmRuntimeSpawner.site_snippets_volume = ""
# the cluster's shared filesystem: the user's drive follows the runtime to the worker
c.SwarmRuntimeSpawner.drive_root = "{cluster.shared_dir}"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
"""
    env = {
        QUOTA_DB_ENV: store.local_url,
        # the daemons run as swarm services: the hub registers them, it starts none
        "KERNELHUB_QUOTAD_URL": f"http://127.0.0.1:{free_port()}",
        "KERNELHUB_QUOTAD_TOKEN": TOKEN,
    }
    return hub_factory(config_text=config, name="swarmq", runtimes="swarm", quotas=True, env=env)


def hub_api_url(hub: HubProcess) -> str:
    """The hub's API where the nodes reach it (the manager's address on the network)."""
    found = re.search(r"Hub API listening on (http://\S+?)/hub/", hub.log())
    assert found, hub.log()
    return f"{found.group(1)}/hub/api"


def running_tasks(service: Service) -> set[str]:
    return {t["NodeID"] for t in service.tasks() if t["Status"]["State"] == "running"}


@pytest.fixture(scope="module")
def quotad(cluster: Cluster, store: Store, hub: HubProcess) -> Iterator[list[Service]]:
    """The socket guard and the quota daemon, global: one task of each on every node."""
    manager, image = cluster.manager, cluster.image(HUB_IMAGE)
    labels = cluster.labels()
    volume = f"{PREFIX}-guard"
    guard_socket = Mount(GUARD_DIR, volume, type="volume", labels=labels)
    secret = f"{PREFIX}-quotad-token"
    token = manager.secrets.create(name=secret, data=TOKEN, labels=labels)
    services: list[Service] = []
    try:
        services.append(
            manager.services.create(
                image,
                name=f"{PREFIX}-socket-guard",
                command=GUARD_COMMAND,
                mode=ServiceMode("global"),
                # root, for the engine's socket (root's), without a capability; the
                # daemon's group, which its read-only socket (660) lets in: no chown
                user=f"0:{QUOTAD_UID}",
                mounts=[
                    Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind"),
                    guard_socket,
                ],
                cap_drop=["ALL"],
                read_only=True,
                labels=labels,
                container_labels=labels,
                restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            )
        )
        services.append(
            manager.services.create(
                image,
                name=f"{PREFIX}-quotad",
                command=QUOTAD_COMMAND,
                mode=ServiceMode("global"),
                env=[
                    f"JUPYTERHUB_API_URL={hub_api_url(hub)}",
                    f"JUPYTERHUB_API_TOKEN_FILE=/run/secrets/{secret}",
                    "JUPYTERHUB_SERVICE_URL=http://127.0.0.1:0",
                    "JUPYTERHUB_SERVICE_PREFIX=/services/kernelhub-quotas/",
                    f"{QUOTA_DB_ENV}={store.cluster_url}",
                    f"DOCKER_HOST=unix://{READ_ONLY_SOCKET}",
                    "KERNELHUB_QUOTAD_PROC=/host/proc",
                    "KERNELHUB_QUOTAD_NODE_LOCAL=1",
                ],
                user=f"{QUOTAD_UID}:{QUOTAD_UID}",
                workdir="/",
                mounts=[
                    Mount("/host/proc", "/proc", type="bind", read_only=True),
                    Mount(GUARD_DIR, volume, type="volume", read_only=True, labels=labels),
                    Mount("/tmp", None, type="tmpfs"),
                ],
                secrets=[
                    SecretReference(token.id, secret, uid=QUOTAD_UID, gid=QUOTAD_UID, mode=0o400)
                ],
                networks=["host"],  # the node's address: the hub and PostgreSQL on the gateway
                cap_drop=["ALL"],
                read_only=True,
                labels=labels,
                container_labels=labels,
                restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            )
        )
        nodes = {n.id for n in manager.nodes.list()}
        for service in services:
            wait_for(
                lambda s=service: running_tasks(s) == nodes,
                timeout=180,
                what=f"{service.name} running on every node\n{cluster.logs()}",
            )
        yield services
    finally:
        for service in services:
            service.remove()

        def containers_gone() -> bool:
            return not any(
                manager.containers.list(
                    all=True, filters={"label": f"com.docker.swarm.service.name={s.name}"}
                )
                for s in services
            )

        # the manager's copy of the node-local volume, once no task holds it (the
        # worker's goes with the worker)
        wait_for(containers_gone, timeout=90, what="the services' containers gone")
        for leftover in manager.volumes.list(filters={"name": volume}):
            leftover.remove(force=True)
        token.remove()


@pytest.fixture(scope="module")
def lockdown(cluster: Cluster, hub: HubProcess, quotad: list[Service]) -> Iterator[Service]:
    """The runtimes' firewall, global, as the stack deploys it: root on the host's
    network with the three capabilities it needs, the host's /proc, the node's engine
    through the guard's read-only view. The hub is on the manager's host, at the
    gateway."""
    manager, labels = cluster.manager, cluster.labels()
    api_port = hub_api_url(hub).split(":")[2].split("/")[0]
    service = manager.services.create(
        cluster.image(HUB_IMAGE),
        name=f"{PREFIX}-lock-runtimes",
        command=[*LOCK_COMMAND, f"--hub={cluster.gateway}/32", f"--hub-ports={api_port}"],
        mode=ServiceMode("global"),
        env=[f"DOCKER_HOST=unix://{READ_ONLY_SOCKET}"],
        user="0:0",
        mounts=[
            Mount("/host/proc", "/proc", type="bind", read_only=True),
            Mount(GUARD_DIR, f"{PREFIX}-guard", type="volume", read_only=True, labels=labels),
            Mount("/run", None, type="tmpfs"),
        ],
        networks=["host"],
        cap_drop=["ALL"],
        cap_add=["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"],
        read_only=True,
        labels=labels,
        container_labels=labels,
        restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
    )
    try:
        nodes = {n.id for n in manager.nodes.list()}
        wait_for(
            lambda: running_tasks(service) == nodes,
            timeout=180,
            what=f"{service.name} running on every node\n{cluster.logs()}",
        )
        yield service
    finally:
        service.remove()
        wait_for(
            lambda: (
                not manager.containers.list(
                    all=True, filters={"label": f"com.docker.swarm.service.name={service.name}"}
                )
            ),
            timeout=90,
            what="the firewall's containers gone",
        )


def task_container_logs(engine: docker.DockerClient, service: str) -> str:
    """The logs of ``service``'s task on the node whose engine is ``engine``."""
    found = engine.containers.list(
        all=True, filters={"label": f"com.docker.swarm.service.name={service}"}
    )
    return "\n".join(c.logs().decode(errors="replace") for c in found)


# what the worker's daemon sees: its container, each container's processes and labels
DIAGNOSIS = """
import os
from kernelhub.quotas.containers import container_id, docker_labels
from kernelhub.quotas.runtimes import ProcessScanner
root = "/host/proc"
print("own cgroup:", open(root + "/self/cgroup").read().strip())
seen = {}
for entry in os.listdir(root):
    if entry.isdigit():
        try:
            cgroup = open(f"{root}/{entry}/cgroup").read().strip()
        except OSError as e:
            cgroup = repr(e)
        seen.setdefault(container_id(cgroup), []).append((entry, cgroup[:160]))
for container, procs in seen.items():
    print(container, len(procs), procs[0], container and docker_labels(container))
print({k: (u.pids, u.cpu_seconds) for k, u in ProcessScanner(proc=root).scan({}).items()})
"""


def diagnose(cluster: Cluster) -> None:
    """The daemons' and guards' logs (less the hub calls), and the worker's view."""
    for engine in (cluster.manager, cluster.worker_client(1)):
        for service in (f"{PREFIX}-quotad", f"{PREFIX}-socket-guard"):
            lines = task_container_logs(engine, service).splitlines()
            shown = [x for x in lines if "HTTP Request" not in x][-60:]
            print(f"----- {service} -----", *shown, sep="\n")
    worker = cluster.worker_client(1)
    for daemon in worker.containers.list(
        filters={"label": f"com.docker.swarm.service.name={PREFIX}-quotad"}
    ):
        print(daemon.exec_run(["python3", "-c", DIAGNOSIS]).output.decode(errors="replace"))


def cpu_seconds(store: QuotaStore) -> float:
    return sum(u.cpu_seconds for u in store.usage(USER, datetime.now(UTC).date()))


def test_the_daemon_on_a_worker_accounts_a_runtime_on_that_worker(
    cluster: Cluster, store: Store, hub: HubProcess, quotad: list[Service], lockdown: Service
) -> None:
    token = hub.token(USER)
    readings: list[float] = []
    with hub.api(token) as api, QuotaStore.open_read_only(store.local_url) as quotas:
        try:
            start_runtime(api, USER, "", "gpu")
            (service,) = cluster.manager.services.list(filters={"label": f"{USER_LABEL}={USER}"})
            (task,) = [t for t in service.tasks() if t["DesiredState"] == "running"]
            node = cluster.manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
            assert node == f"{PREFIX}-worker-1"
            RuntimeClient.of(hub.url, USER, "", token).run(BURN).ok()

            def grown() -> bool:
                readings.append(cpu_seconds(quotas))
                return readings[-1] >= 5.0  # half a core's limit: ten seconds or so

            wait_for(grown, timeout=120, interval=2, what="CPU seconds accounted")
            time.sleep(4)
            assert cpu_seconds(quotas) > readings[-1]  # still growing: the burner runs
        except BaseException:
            print(f"CPU seconds read: {readings}\n{cluster.logs()}")
            diagnose(cluster)
            raise
        finally:
            stop_all_runtimes(api, USER)
    # the worker's daemon took it on; the manager's, which saw the same server, did not
    said = f"{USER}/ runs on this node"
    assert said in task_container_logs(cluster.worker_client(1), f"{PREFIX}-quotad")
    manager_log = task_container_logs(cluster.manager, f"{PREFIX}-quotad")
    assert "kernelhub-quotad: every" in manager_log and said not in manager_log


def test_the_daemons_read_the_engine_through_the_guard_only(
    cluster: Cluster, quotad: list[Service]
) -> None:
    """The daemon's view of the engine: the guard's read-only socket, its user's alone."""
    worker = cluster.worker_client(1)
    (daemon,) = worker.containers.list(
        filters={"label": f"com.docker.swarm.service.name={PREFIX}-quotad"}
    )
    attrs = daemon.attrs
    assert attrs["Config"]["User"] == f"{QUOTAD_UID}:{QUOTAD_UID}"
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and attrs["HostConfig"]["PidMode"] == ""
    assert not any(m["Destination"] == "/var/run/docker.sock" for m in attrs["Mounts"])
    listing = daemon.exec_run(["ls", "-ln", GUARD_DIR]).output.decode()
    assert f"srw-rw---- 1 0 {QUOTAD_UID}" in listing  # quotad.sock: the daemon's group
    assert f"srw------- 1 0 {QUOTAD_UID}" in listing  # the read-write socket: root's alone
    probe = (
        "import docker, sys\n"
        "c = docker.from_env()\n"
        "print(len(c.containers.list()))\n"
        "try:\n"
        "    c.containers.run('busybox', 'true')\n"
        "except docker.errors.APIError as e:\n"
        "    print('refused', e.response.status_code)\n"
    )
    ran = daemon.exec_run(["python3", "-c", probe])
    assert ran.exit_code == 0, ran.output.decode()
    assert "refused 403" in ran.output.decode()
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect('{GUARD_DIR}/engine.sock')"
    rw = daemon.exec_run(["python3", "-c", connect])
    assert rw.exit_code != 0 and b"PermissionError" in rw.output


def node_and_address(manager: docker.DockerClient, user: str) -> tuple[str, str]:
    """Where ``user``'s runtime runs: its node's hostname, its address on the overlay."""
    (service,) = manager.services.list(filters={"label": f"{USER_LABEL}={user}"})
    (task,) = [t for t in service.tasks() if t["DesiredState"] == "running"]
    node = manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
    (address,) = [
        a["Addresses"][0].split("/")[0]
        for a in task.get("NetworksAttachments", [])
        if a["Network"]["Spec"]["Name"] == RUNTIMES_NETWORK
    ]
    return node, address


def test_runtimes_on_any_node_reach_the_hub_but_not_each_other(
    cluster: Cluster, store: Store, hub: HubProcess, lockdown: Service
) -> None:
    users = [f"{PREFIX}{name}" for name in ("alice", "bob", "carol")]
    tokens = {user: hub.token(user) for user in users}
    manager = cluster.manager
    decoy = manager.services.create(
        cluster.image(RUNTIME_IMAGE),
        ["python3", "-c", LISTENER],
        name=f"{PREFIX}-decoy",
        networks=[RUNTIMES_NETWORK],
        labels=cluster.labels(),
        container_labels=cluster.labels(),
    )
    try:
        for user in users:
            with hub.api(tokens[user]) as api:
                start_runtime(api, user, "", "gpu")
        where = {user: node_and_address(manager, user) for user in users}
        nodes = {node for node, _ in where.values()}
        assert nodes == {f"{PREFIX}-worker-1", cluster.manager_name}, where  # both kinds of pair
        wait_for(lambda: running_tasks(decoy), timeout=120, what="the decoy running")
        decoy_node = manager.nodes.get(next(iter(running_tasks(decoy))))
        decoy_engine = (
            manager
            if decoy_node.attrs["Description"]["Hostname"] == cluster.manager_name
            else cluster.worker_client(1)
        )
        (decoy_container,) = decoy_engine.containers.list(
            filters={"label": f"com.docker.swarm.service.name={decoy.name}"}
        )
        decoy_address = decoy_container.attrs["NetworkSettings"]["Networks"][RUNTIMES_NETWORK][
            "IPAddress"
        ]
        # the threat is real: on the overlay, anything unlocked reaches every runtime
        for user, (_, address) in where.items():
            reached = decoy_container.exec_run(
                ["python3", "-c", f"{PROBE}\nprint(probe({address!r}, 8888))"]
            )
            assert reached.output.decode().strip() == "open", (user, reached.output)

        api_port = int(hub_api_url(hub).split(":")[2].split("/")[0])
        for user in users:
            others = {o: address for o, (_, address) in where.items() if o != user}
            code = PROBE + (
                f"print({{o: probe(a, 8888) for o, a in {others!r}.items()}})\n"
                f"print(probe({decoy_address!r}, {DECOY_PORT}))\n"
                f"print(probe({cluster.gateway!r}, {api_port}))\n"
                f"print(probe({cluster.gateway!r}, {store_port(store)}))\n"
            )
            lines = RuntimeClient.of(hub.url, user, "", tokens[user]).run(code).ok().splitlines()
            peers, to_decoy, to_hub, to_node = (line.strip() for line in lines[-4:])
            assert "open" not in peers, (user, where[user], peers)
            assert to_decoy != "open", (user, to_decoy)
            assert to_hub == "open", (user, to_hub)  # the hub's API, on the manager
            assert to_node != "open", (user, to_node)  # PostgreSQL, on the same address
    except BaseException:
        for engine in (manager, cluster.worker_client(1)):
            print(task_container_logs(engine, lockdown.name)[-3000:])
        raise
    finally:
        decoy.remove()
        for user in users:
            with hub.api(tokens[user]) as api:
                stop_all_runtimes(api, user)
    said = task_container_logs(cluster.worker_client(1), lockdown.name)
    said += task_container_logs(manager, lockdown.name)
    assert all(f"of {user}" in said for user in users), said
    assert "NOT locked down" not in said, said


def store_port(store: Store) -> int:
    """The quota store's port on the gateway: a service of the node's, not the hub's."""
    return int(store.cluster_url.rsplit("@", 1)[1].split("/")[0].split(":")[1])
