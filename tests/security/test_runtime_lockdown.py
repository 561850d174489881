"""Runtimes locked down inside their own network namespaces (`kernelhub network
lock-runtimes`, Swarm's firewall), attacked through the real engine and iptables.

A Docker bridge with inter-container communication ON stands for a Swarm overlay,
whose traffic between containers no host chain sees: every container reaches every
other until the runtimes' own rules say otherwise. On it a "hub" decoy (listening on a
hub port and on another) and two "runtime" containers of the test image, labelled as
two users' runtimes, running as jovyan with no capability. Every address probed is one
this module created.

Each attack is first shown to succeed unlocked, so the test proves that the lock-down
is what stops it; and the runtime's launcher is shown to start nothing of the user's
until its namespace is locked.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from harness import KERNELHUB, wait_until

from kernelhub.contract import USER_LABEL
from kernelhub.spawner.namespace_firewall import LockError, NamespaceLock, Runtime
from kernelhub.spawner.namespace_rules import LOCKED_MARK, RuntimeNamespace

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_IMAGE = "kernelhub/runtime-test:latest"
RUN = secrets.token_hex(3)
HUB_PORT, OTHER_PORT, SERVER_PORT = 8081, 9000, 8888
# connect to HOST:PORT; print "open" or the error's name (refused, unreachable, timeout)
PROBE = """import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except OSError as e:
    print(type(e).__name__)
"""
# accept and close connections on each port given
LISTENER = """import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        s.accept()[0].close()
for port in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
serve(int(sys.argv[1]))
"""


@dataclass
class Lab:
    engine: docker.DockerClient
    gateway: str  # the host's address on the bridge
    hub: str
    a: str  # alice's runtime
    b: str  # bob's runtime
    names: dict[str, str]  # address -> container name

    def probe(self, source: str, target: str, port: int) -> str:
        """Connect from the container at ``source``, as its own user, to target:port."""
        container = self.engine.containers.get(self.names[source])
        result = container.exec_run(["python3", "-c", PROBE, target, str(port)])
        return str(result.output.decode().strip())

    def lock(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """`kernelhub network lock-runtimes --once`, as the node's service would run it."""
        return subprocess.run(
            [KERNELHUB, "network", "lock-runtimes", "--once", f"--hub={self.hub}/32",
             f"--hub-ports={HUB_PORT}", "--dns=none", *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


def runtime(engine: docker.DockerClient, name: str, ip: str, user: str, network: str) -> None:
    """A container like a runtime: the test image as jovyan, no capability, labelled as
    ``user``'s, its server port served by a stand-in listener."""
    container = engine.containers.create(
        TEST_IMAGE,
        ["python3", "-c", LISTENER, str(SERVER_PORT), str(HUB_PORT)],
        name=name,
        user="jovyan",
        cap_drop=["ALL"],
        labels={USER_LABEL: user},
        network=network,
    )
    engine.networks.get(network).disconnect(container)
    engine.networks.get(network).connect(container, ipv4_address=ip)
    container.start()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("needs root: it enters containers' network namespaces (CI runs as root)")
    engine = docker.from_env()
    engine.images.get(TEST_IMAGE)  # no image: this fails loudly, never skips
    network_name = f"khlock-{RUN}"
    network = engine.networks.create(
        network_name,
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=free_subnet())]),
    )
    try:
        subnet = ipaddress.IPv4Network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        gateway, hub, a, b = (str(subnet.network_address + i) for i in (1, 2, 10, 11))
        names = {hub: f"khlock-{RUN}-hub", a: f"khlock-{RUN}-a", b: f"khlock-{RUN}-b"}
        hub_container = engine.containers.create(
            TEST_IMAGE,
            ["python3", "-c", LISTENER, str(HUB_PORT), str(OTHER_PORT)],
            name=names[hub],
            network=network_name,
        )
        network.disconnect(hub_container)
        network.connect(hub_container, ipv4_address=hub)
        hub_container.start()
        runtime(engine, names[a], a, f"alice{RUN}", network_name)
        runtime(engine, names[b], b, f"bob{RUN}", network_name)
        built = Lab(engine, gateway, hub, a, b, names)
        wait_until(lambda: built.probe(a, hub, HUB_PORT) == "open", timeout=30, what="the lab")
        yield built
    finally:
        for container in engine.containers.list(all=True, filters={"name": f"khlock-{RUN}"}):
            container.remove(force=True)
        network.remove()


def free_subnet() -> str:
    used = [
        ipaddress.IPv4Network(c["Subnet"])
        for n in docker.from_env().networks.list()
        for c in (n.attrs.get("IPAM") or {}).get("Config") or []
        if "." in c.get("Subnet", "")
    ]
    for _ in range(50):
        candidate = ipaddress.IPv4Network(f"10.216.{secrets.randbelow(250) + 2}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise AssertionError("no free 10.216.N.0/24 network on this host")


# (from, to, port, what it stands for): each open before the lock-down, refused after
ATTACKS = [
    ("a", "b", SERVER_PORT, "alice's code opens bob's Jupyter server"),
    ("b", "a", SERVER_PORT, "bob's code opens alice's Jupyter server"),
    ("a", "b", HUB_PORT, "a runtime listening on a hub port, reached by another"),
    ("a", "hub", OTHER_PORT, "a service of the hub's other than its ports"),
    ("a", "gateway", HUB_PORT, "the node itself (its address on the runtimes' network)"),
]
# what must keep working: the hub's ports, and the hub reaching a runtime's server
ALLOWED = [
    ("a", "hub", HUB_PORT, "alice's server calls the hub's API"),
    ("hub", "a", SERVER_PORT, "the hub's proxy reaches alice's server"),
    ("hub", "b", SERVER_PORT, "the hub's proxy reaches bob's server"),
]


def address(lab: Lab, who: str) -> str:
    return {"a": lab.a, "b": lab.b, "hub": lab.hub, "gateway": lab.gateway}[who]


def test_runtimes_reach_each_other_only_until_locked_down(lab: Lab) -> None:
    gateway_listener = subprocess.Popen(
        ["python3", "-c", LISTENER.replace('"0.0.0.0"', f'"{lab.gateway}"'), str(HUB_PORT)]
    )
    try:
        wait_until(
            lambda: lab.probe(lab.hub, lab.gateway, HUB_PORT) == "open", timeout=20, what="decoy"
        )
        before = {what: lab.probe(address(lab, s), address(lab, t), p) for s, t, p, what in ATTACKS}
        assert before == {what: "open" for *_, what in ATTACKS}, before  # the threat is real

        locked = lab.lock()
        assert locked.returncode == 0, locked.stderr
        assert f"locked down runtime {lab.names[lab.a]} of alice{RUN}" in locked.stderr

        after = {what: lab.probe(address(lab, s), address(lab, t), p) for s, t, p, what in ATTACKS}
        assert all(result != "open" for result in after.values()), after
        kept = {what: lab.probe(address(lab, s), address(lab, t), p) for s, t, p, what in ALLOWED}
        assert kept == {what: "open" for *_, what in ALLOWED}, kept
    finally:
        gateway_listener.kill()


def test_a_runtimes_user_cannot_undo_or_fake_the_lock_down(lab: Lab) -> None:
    assert lab.lock().returncode == 0  # idempotent: the same rules again
    alice = lab.engine.containers.get(lab.names[lab.a])
    mark = alice.exec_run(["cat", "/sys/class/net/lo/ifalias"]).output.decode().strip()
    assert mark == LOCKED_MARK
    # no capability: neither the rules (netlink) nor the mark can be changed
    caps = alice.exec_run(["grep", "CapEff", "/proc/self/status"]).output.decode()
    assert caps.split()[-1] == "0000000000000000", caps
    rename = alice.exec_run(["sh", "-c", "echo unlocked > /sys/class/net/lo/ifalias"])
    assert rename.exit_code != 0
    assert lab.probe(lab.a, lab.b, SERVER_PORT) != "open"


def test_a_reused_process_number_is_never_entered(lab: Lab) -> None:
    """Between the engine's answer and the lock, a runtime's process may exit and its
    number go to another process: here this test's own, in the host's namespace, whose
    filter table the rules would replace. The lock refuses it."""
    before = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True)
    impostor = Runtime(id="f" * 64, name="gone", user="x", pid=os.getpid(), networks={})
    settings = RuntimeNamespace(hub_networks=(ipaddress.IPv4Network(f"{lab.hub}/32"),))
    with pytest.raises(LockError, match=r"own network namespace|no longer the container's"):
        NamespaceLock(Path("/proc")).lock(impostor, settings)
    # the hub decoy's process, with alice's container id: not the container's process
    hub_pid = lab.engine.containers.get(lab.names[lab.hub]).attrs["State"]["Pid"]
    alice_id = lab.engine.containers.get(lab.names[lab.a]).id
    wrong = Runtime(id=alice_id, name="a", user="x", pid=hub_pid, networks={})
    with pytest.raises(LockError, match="no longer the container's"):
        NamespaceLock(Path("/proc")).lock(wrong, settings)
    after = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True)
    assert after.stdout == before.stdout
    in_hub = subprocess.run(
        ["nsenter", f"--net=/proc/{hub_pid}/ns/net", "iptables", "-S"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "KH-RUNTIME" not in in_hub.stdout


def launcher(lab: Lab, name: str, wait: str) -> docker.models.containers.Container:
    """A runtime container started by the images' launcher, waiting ``wait`` seconds."""
    return lab.engine.containers.run(
        TEST_IMAGE,
        ["kernelhub-runtime"],
        name=name,
        detach=True,
        user="jovyan",
        cap_drop=["ALL"],
        labels={USER_LABEL: f"carol{RUN}"},
        environment={"KERNELHUB_AWAIT_LOCKDOWN": wait},
        network=f"khlock-{RUN}",
    )


@pytest.mark.parametrize(
    ("wait", "says"),
    [
        ("2", "this runtime's network lock-down was not in place after 2 s"),
        ("nan", "KERNELHUB_AWAIT_LOCKDOWN='nan': expected 0-3600 s"),
        ("-1", "KERNELHUB_AWAIT_LOCKDOWN='-1': expected 0-3600 s"),
    ],
)
def test_an_unlocked_runtime_never_starts_its_server(lab: Lab, wait: str, says: str) -> None:
    container = launcher(lab, f"khlock-{RUN}-never{secrets.token_hex(2)}", wait)
    try:
        assert container.wait(timeout=60)["StatusCode"] != 0
        lines = container.logs().decode().strip().splitlines()
        assert len(lines) == 1 and says in lines[0], lines  # that, and nothing of a server
    finally:
        container.remove(force=True)


def test_a_locked_runtime_starts_its_server_once_locked(lab: Lab) -> None:
    container = launcher(lab, f"khlock-{RUN}-later", "60")
    try:
        wait_until(lambda: container.reload() or container.status == "running", timeout=20)
        assert container.logs() == b""  # waiting: nothing of the server's yet
        assert lab.lock().returncode == 0
        # past the wait: the server starts (and, without a hub to talk to, says so)
        wait_until(lambda: b"JUPYTERHUB" in container.logs(), timeout=60, what="the server")
    finally:
        container.remove(force=True)
