"""What a runtime container can reach, attacked through the real engine and iptables.

A bridge built like the deployment's runtimes network (fixed interface name,
inter-container communication off, fixed subnet), a "hub" decoy container at a fixed
address, two "runtime" containers of the test image, and decoys standing for what a
runtime must not reach: a private address of the host (on an interface of its own), the
bridge's gateway (the host itself), and a private network behind the host (a network
namespace on a veth pair) standing for the internal network, cloud services and the
LAN. Every address probed is one this module created; the link-local (metadata) and
private-range rules are checked by reading the rule set, never by sending to them.

Each attack is first shown to succeed without the rules, so the test proves that
`kernelhub network lock-down` is what stops it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from harness import KERNELHUB, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_IMAGE = "kernelhub/runtime-test:latest"
RUN = secrets.token_hex(3)
BRIDGE = f"khnt{RUN}"  # the bridge's interface name, <= 15 characters
DUMMY, VETH, NETNS = f"khd{RUN}", f"khv{RUN}", f"khns{RUN}"
HUB_PORTS, SERVER_PORT, OTHER_PORT = (8000, 8081), 8888, 9000
# connect to HOST:PORT; print "open" or the error's name (refused, unreachable, timeout)
PROBE = """import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except OSError as e:
    print(type(e).__name__, e.errno)
"""
# accept and close connections on HOST:PORT (0: any free port, printed first)
LISTENER = """import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    s.accept()[0].close()
"""


def sh(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def used_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all"))
    return [ipaddress.IPv4Network(r["dst"], strict=False) for r in routes if r["dst"] != "default"]


@dataclass
class Lab:
    subnet: ipaddress.IPv4Network
    gateway: str  # the host's address on the bridge
    hub: str
    runtime_a: str
    runtime_b: str
    dummy: str  # a private address of the host's own (an interface of its own)
    private: str  # a private address behind the host (network namespace)
    containers: dict[str, str]  # address -> container name
    host_ports: dict[str, int]  # "dummy", "private", "gateway", "gateway-other" -> port

    def probe(self, source: str, target: str, port: int) -> str:
        """Connect from the container at ``source`` to ``target:port``."""
        name = self.containers[source]
        return sh("docker", "exec", name, "python3", "-c", PROBE, target, str(port)).strip()


def free_octet() -> int:
    used = used_networks()
    for _ in range(50):
        n = secrets.randbelow(250) + 2
        ours = [ipaddress.ip_network(f"10.{b}.{n}.0/24") for b in (212, 213, 215)]
        if not any(a.overlaps(b) for a in ours for b in used):
            return n
    raise AssertionError("no free 10.212-215.N.0/24 networks on this host")


def listen(ip: str, port: int = 0, netns: str | None = None) -> tuple[subprocess.Popen[str], int]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", LISTENER, ip, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("needs root: it creates interfaces and iptables rules (CI runs as root)")
    sh("docker", "image", "inspect", TEST_IMAGE)  # no image: this fails loudly, never skips
    n = free_octet()
    subnet = ipaddress.IPv4Network(f"10.212.{n}.0/24")
    gateway, hub, a, b = (f"10.212.{n}.{i}" for i in (1, 2, 10, 11))
    dummy, private = f"10.213.{n}.1", f"10.215.{n}.2"
    net, names = f"khnt-{RUN}", {hub: f"khnt-{RUN}-hub", a: f"khnt-{RUN}-a", b: f"khnt-{RUN}-b"}
    processes: list[subprocess.Popen[str]] = []
    try:
        sh(
            "docker", "network", "create", "--driver", "bridge",
            "--subnet", str(subnet), "--gateway", gateway,
            "-o", f"com.docker.network.bridge.name={BRIDGE}",
            "-o", "com.docker.network.bridge.enable_icc=false",
            net,
        )  # fmt: skip
        listeners = {hub: (*HUB_PORTS, OTHER_PORT), a: (SERVER_PORT, OTHER_PORT)}
        listeners[b] = listeners[a]
        for ip, name in names.items():
            script = " & ".join(f"python3 -m http.server {p}" for p in listeners[ip]) + " & wait"
            sh("docker", "run", "-d", "--name", name, "--network", net, "--ip", ip,
               TEST_IMAGE, "sh", "-c", script)  # fmt: skip
        # a private address of the host, like a database listening on a host interface
        # (an empty bridge, not a dummy: some kernels are built without the dummy driver)
        sh("ip", "link", "add", DUMMY, "type", "bridge")
        sh("ip", "addr", "add", f"{dummy}/32", "dev", DUMMY)
        sh("ip", "link", "set", DUMMY, "up")
        # a private network the host routes to, like a cloud VPC's services
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", f"{VETH}p")
        sh("ip", "link", "set", f"{VETH}p", "netns", NETNS)
        sh("ip", "addr", "add", f"10.215.{n}.1/30", "dev", VETH)
        sh("ip", "link", "set", VETH, "up")
        sh("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{private}/30", "dev", f"{VETH}p")
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", f"{VETH}p", "up")
        ports = {}
        for key, ip, netns in [
            ("dummy", dummy, None),
            ("private", private, NETNS),
            ("gateway", gateway, None),
            ("gateway-other", gateway, None),
        ]:
            process, ports[key] = listen(ip, netns=netns)
            processes.append(process)
        lab = Lab(subnet, gateway, hub, a, b, dummy, private, names, ports)
        wait_until(
            lambda: all(lab.probe(ip, ip, p) == "open" for ip in names for p in listeners[ip]),
            timeout=60,
            what="the decoy containers' listeners",
        )
        yield lab
    finally:
        for process in processes:
            process.kill()
            process.wait()
        sh(KERNELHUB, "network", "lock-down", "--bridge", BRIDGE, "--remove", check=False)
        for name in names.values():
            sh("docker", "rm", "-f", name, check=False)
        sh("docker", "network", "rm", net, check=False)
        sh("ip", "link", "del", DUMMY, check=False)
        sh("ip", "link", "del", VETH, check=False)
        sh("ip", "netns", "del", NETNS, check=False)


LockDownCommand = Callable[..., str]  # lock-down's extra arguments -> its output


@pytest.fixture
def lock_down(lab: Lab) -> Iterator[LockDownCommand]:
    """Runs `kernelhub network lock-down --bridge BRIDGE ARGS`; removes the rules after."""

    def run(*args: str) -> str:
        done = subprocess.run(
            [KERNELHUB, "network", "lock-down", "--bridge", BRIDGE, "--dns", "none", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    yield run
    sh(KERNELHUB, "network", "lock-down", "--bridge", BRIDGE, "--remove")


def our_rules() -> str:
    """Every iptables and ip6tables rule of lock-down's chains or jumping to them
    (Docker's own rules for the bridge are not ours)."""
    return "\n".join(
        line
        for command in ("iptables", "ip6tables")
        for line in sh(command, "-S").splitlines()
        if f"KH-FWD-{BRIDGE}" in line or f"KH-IN-{BRIDGE}" in line
    )


def test_runtimes_reach_only_the_hub_and_each_other_not_at_all(
    lab: Lab, lock_down: LockDownCommand
) -> None:
    a, b, hub, ports = lab.runtime_a, lab.runtime_b, lab.hub, lab.host_ports
    host_decoys = [
        (lab.dummy, ports["dummy"]),  # a private address of the host
        (lab.private, ports["private"]),  # a private network behind the host
        (lab.gateway, ports["gateway"]),  # the host itself, on the bridge
    ]
    # without the rules: Docker's ICC=false keeps containers apart (the hub too) ...
    assert lab.probe(a, b, SERVER_PORT) != "open"
    assert lab.probe(hub, a, SERVER_PORT) != "open"
    # ... but a runtime reaches every address of the host and every network it routes to
    for target, port in host_decoys:
        assert lab.probe(a, target, port) == "open", (target, port)

    lock_down("--hub", hub)

    assert lab.probe(hub, a, SERVER_PORT) == "open"  # the hub's proxy reaches the server
    for port in HUB_PORTS:
        assert lab.probe(a, hub, port) == "open"  # the runtime reaches the hub's API
    assert lab.probe(a, hub, OTHER_PORT) != "open"
    assert lab.probe(a, b, SERVER_PORT) != "open"  # no runtime reaches another
    assert lab.probe(b, a, OTHER_PORT) != "open"
    assert lab.probe(hub, a, OTHER_PORT) != "open"
    for target, port in [*host_decoys, (lab.gateway, ports["gateway-other"])]:
        assert lab.probe(a, target, port) != "open", (target, port)


def test_the_allow_list_opens_named_private_addresses(lab: Lab, lock_down: LockDownCommand) -> None:
    ports = lab.host_ports
    lock_down("--hub", lab.hub, "--allow", f"{lab.dummy}/32", "--allow", f"{lab.private}/32")
    assert lab.probe(lab.runtime_a, lab.dummy, ports["dummy"]) == "open"
    assert lab.probe(lab.runtime_a, lab.private, ports["private"]) == "open"
    assert lab.probe(lab.runtime_a, lab.gateway, ports["gateway"]) != "open"  # not allowed
    assert lab.probe(lab.runtime_a, lab.runtime_b, SERVER_PORT) != "open"


def test_a_hub_on_the_host_is_reached_through_the_gateway(
    lab: Lab, lock_down: LockDownCommand
) -> None:
    hub_port, other = lab.host_ports["gateway"], lab.host_ports["gateway-other"]
    lock_down("--hub", lab.gateway, "--hub-on-host", "--hub-ports", str(hub_port))
    assert lab.probe(lab.runtime_a, lab.gateway, hub_port) == "open"
    assert lab.probe(lab.runtime_a, lab.gateway, other) != "open"
    assert lab.probe(lab.runtime_a, lab.runtime_b, SERVER_PORT) != "open"
    assert lab.probe(lab.runtime_a, lab.dummy, lab.host_ports["dummy"]) != "open"
    # the host-side hub still reaches the runtime's server (replies come back as INPUT)
    wait_until(lambda: _host_connects(lab.runtime_a, SERVER_PORT), timeout=10, what="a's server")


def _host_connects(ip: str, port: int) -> bool:
    out = sh(sys.executable, "-c", PROBE, ip, str(port)).strip()
    return out == "open"


def test_metadata_and_private_ranges_are_in_the_rule_set(
    lab: Lab, lock_down: LockDownCommand
) -> None:
    lock_down("--hub", lab.hub, "--block-mining-ports")
    forward = sh("iptables", "-S", f"KH-FWD-{BRIDGE}").splitlines()
    for network in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert (
            f"-A KH-FWD-{BRIDGE} -d {network} -j REJECT --reject-with icmp-admin-prohibited"
            in forward
        )
    assert (
        f"-A KH-FWD-{BRIDGE} -d 100.64.0.0/10 -j REJECT --reject-with icmp-admin-prohibited"
        in forward
    )
    assert any("3333" in rule and "REJECT" in rule for rule in forward)  # a mining-pool port
    assert f"-A DOCKER-USER -i {BRIDGE} -j KH-FWD-{BRIDGE}" in sh("iptables", "-S", "DOCKER-USER")
    assert f"-A INPUT -i {BRIDGE} -j KH-IN-{BRIDGE}" in sh("iptables", "-S", "INPUT")
    forward6 = sh("ip6tables", "-S", f"KH-FWD-{BRIDGE}").splitlines()
    for network in ("fe80::/10", "fc00::/7"):
        assert (
            f"-A KH-FWD-{BRIDGE} -d {network} -j REJECT --reject-with icmp6-adm-prohibited"
            in forward6
        )


def test_reapplying_replaces_and_watch_restores_the_rules(
    lab: Lab, lock_down: LockDownCommand
) -> None:
    lock_down("--hub", lab.hub)
    first = our_rules()
    assert lock_down("--hub", lab.hub) == ""  # nothing to (re)create: silent
    assert our_rules() == first  # no rule twice
    lock_down("--hub", lab.hub, "--allow", f"{lab.dummy}/32")
    assert f"-d {lab.dummy}/32 -j RETURN" in our_rules()
    assert our_rules().count(f"-A DOCKER-USER -i {BRIDGE}") == 1
    lock_down("--check", "--hub", lab.hub)

    # as after a firewall reload that dropped a jump and a chain's rules: --watch restores
    watcher = subprocess.Popen(
        [KERNELHUB, "network", "lock-down", "--bridge", BRIDGE, "--hub", lab.hub, "--dns", "none",
         "--watch", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: our_rules() == first, timeout=20, what="the watcher's first round")
        sh("iptables", "-D", "DOCKER-USER", "-i", BRIDGE, "-j", f"KH-FWD-{BRIDGE}")
        sh("iptables", "-F", f"KH-IN-{BRIDGE}")
        wait_until(lambda: our_rules() == first, timeout=20, what="the rules restored")
        assert lab.probe(lab.runtime_a, lab.dummy, lab.host_ports["dummy"]) != "open"
        assert lab.probe(lab.runtime_a, lab.private, lab.host_ports["private"]) != "open"
    finally:
        watcher.terminate()
        _, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, err
    assert "the rules stay installed" in err
    assert f"-A DOCKER-USER -i {BRIDGE}" in our_rules()  # a stopped watcher opens nothing


def test_remove_leaves_no_rule_or_chain(lab: Lab) -> None:
    run = [KERNELHUB, "network", "lock-down", "--bridge", BRIDGE, "--dns", "none"]
    sh(*run, "--hub", lab.hub, "--allow", f"{lab.dummy}/32", "--block-mining-ports")
    assert our_rules()
    sh(*run, "--remove")
    assert our_rules() == ""
    assert f"KH-FWD-{BRIDGE}" not in sh("iptables", "-S") + sh("ip6tables", "-S")
    done = subprocess.run([*run, "--hub", lab.hub, "--check"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "not installed" in done.stderr
    # and the runtimes are back to Docker's rules alone
    assert lab.probe(lab.runtime_a, lab.dummy, lab.host_ports["dummy"]) == "open"
