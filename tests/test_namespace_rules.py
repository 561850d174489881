"""The rules `kernelhub network lock-runtimes` puts in each runtime's network namespace
(spawner/namespace_rules.py), and how its watch picks runtimes; the rules in action are
tests/security/test_runtime_lockdown.py's and tests/test_swarm_quotad.py's."""

from __future__ import annotations

import logging
import re
import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from pathlib import Path
from typing import Any

import pytest
from harness import KERNELHUB

from kernelhub.contract import USER_LABEL
from kernelhub.spawner.namespace_firewall import (
    LockError,
    NamespaceLock,
    Policy,
    Runtime,
    RuntimeWatch,
    runtime_from_inspect,
)
from kernelhub.spawner.namespace_rules import (
    LOCKED_MARK,
    RuleError,
    RuntimeNamespace,
    local_addresses,
    namespace_rules,
)

ROOT = Path(__file__).resolve().parents[1]
HUB_NET = IPv4Network("10.0.7.0/24")
SETTINGS = RuntimeNamespace(
    hub_networks=(HUB_NET,),
    own_networks=(HUB_NET,),
    allow=(IPv4Network("10.9.0.0/16"),),
    dns_servers=(ip_address("10.255.0.2"),),
    node_addresses=(IPv4Address("203.0.113.7"),),
    blocked_ports=(3333,),
)


def outbound(settings: RuntimeNamespace = SETTINGS) -> list[str]:
    text = namespace_rules(settings, 4)
    return [line[len("-A KH-RUNTIME-OUT ") :] for line in text.splitlines() if "-OUT " in line]


def position(rules: list[str], fragment: str) -> int:
    (index,) = [i for i, rule in enumerate(rules) if fragment in rule]
    return index


# (what, a rule that must come before, a rule it must precede): first match wins
HUB_PORTS_OPEN = "10.0.7.0/24 -p tcp -m multiport --dports 8000,8081 -j ACCEPT"
OWN_NET_REFUSED = "-d 10.0.7.0/24 -j REJECT"
PRIVATE_REFUSED = "10.0.0.0/8 -j REJECT"
ORDER = [
    ("replies before any refusal", "ESTABLISHED", OWN_NET_REFUSED),
    ("DNS to the engine's resolvers first", "10.255.0.2/32 -p udp", PRIVATE_REFUSED),
    ("the hub's ports before its network's refusal", HUB_PORTS_OPEN, OWN_NET_REFUSED),
    ("the allow-list before the private ranges", "10.9.0.0/16 -j ACCEPT", PRIVATE_REFUSED),
    ("the node's own addresses refused", "203.0.113.7/32 -j REJECT", "-j ACCEPT"),
    ("link-local (metadata) refused", "169.254.0.0/16 -j REJECT", "-j ACCEPT"),
    ("mining-pool ports refused", "--dport 3333 -j REJECT", "-j ACCEPT"),
    # Swarm's ports on any address (a node's public one too), whatever else allows
    ("swarm's TCP ports first", "--dports 2375,2376,2377,7946 -j REJECT", "-p udp --dport 53"),
    ("VXLAN and gossip over UDP first", "--dports 4789,7946 -j REJECT", "-p udp --dport 53"),
    ("IPsec ESP first", "-p esp -j REJECT", "10.9.0.0/16 -j ACCEPT"),
]


@pytest.mark.parametrize(("what", "first", "then"), ORDER, ids=[o[0] for o in ORDER])
def test_outbound_rules_come_in_this_order(what: str, first: str, then: str) -> None:
    rules = outbound()
    then_at = len(rules) - 1 if then == "-j ACCEPT" else position(rules, then)
    assert position(rules, first) < then_at, rules


def test_the_last_outbound_rule_accepts_the_internet_and_inbound_only_the_server_port() -> None:
    text = namespace_rules(SETTINGS, 4)
    assert outbound()[-1] == "-j ACCEPT"
    inbound = [line for line in text.splitlines() if line.startswith("-A KH-RUNTIME-IN ")]
    assert inbound == [
        "-A KH-RUNTIME-IN -i lo -j ACCEPT",
        "-A KH-RUNTIME-IN -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A KH-RUNTIME-IN -p tcp --dport 8888 -j ACCEPT",
        "-A KH-RUNTIME-IN -j DROP",
    ]
    # the whole filter table, in one transaction: nothing of the runtime's kept
    assert text.startswith("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n")
    assert text.endswith("COMMIT\n")


def test_over_ipv6_only_loopback_and_replies_pass() -> None:
    text = namespace_rules(SETTINGS, 6)
    assert "-A KH-RUNTIME-OUT -j REJECT --reject-with icmp6-adm-prohibited" in text
    assert "8000" not in text and "8888" not in text


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"hub_networks": ()}, "where the hub is must be known"),
        ({"hub_ports": ()}, "at least one hub port"),
        ({"server_port": 0}, "port 0: expected 1-65535"),
        ({"blocked_ports": (70000,)}, "port 70000"),
    ],
)
def test_unsound_settings_are_refused(changes: dict[str, Any], says: str) -> None:
    values: dict[str, Any] = {"hub_networks": (HUB_NET,), **changes}
    with pytest.raises(RuleError, match=says):
        RuntimeNamespace(**values)


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.0
           /16 link UNICAST
        |-- 172.17.0.1
           /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
     |-- 203.0.113.7
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 4
     |-- 172.17.0.1
        /32 host LOCAL
"""


def test_the_nodes_own_addresses_come_from_its_fib_trie() -> None:
    assert local_addresses(FIB_TRIE) == (IPv4Address("172.17.0.1"), IPv4Address("203.0.113.7"))
    assert local_addresses("garbage\n/32 host LOCAL\n|-- not-an-address\n/32 host LOCAL") == ()


def test_the_launcher_waits_for_the_very_mark_the_lock_sets() -> None:
    launcher = (ROOT / "images" / "common" / "kernelhub-runtime").read_text()
    assert f'LOCKED_MARK = "{LOCKED_MARK}"' in launcher


def inspected(**changes: Any) -> dict[str, Any]:
    model: dict[str, Any] = {
        "Id": "a" * 64,
        "Name": "/khrt-alice",
        "Config": {"Labels": {USER_LABEL: "alice"}},
        "State": {"Running": True, "Pid": 4242},
        "NetworkSettings": {"Networks": {"runtimes": {"IPAddress": "10.0.7.5", "IPPrefixLen": 24}}},
    }
    model.update(changes)
    return model


@pytest.mark.parametrize(
    ("model", "is_runtime"),
    [
        (inspected(), True),
        (inspected(Config={"Labels": {}}), False),  # not a runtime: never touched
        (inspected(Config={"Labels": None}), False),
        (inspected(State={"Running": False, "Pid": 0}), False),
        (inspected(State={"Running": True, "Pid": "4242"}), False),
    ],
)
def test_only_running_runtime_containers_are_locked(
    model: dict[str, Any], is_runtime: bool
) -> None:
    assert (runtime_from_inspect(model) is not None) is is_runtime


def test_a_runtimes_own_networks_are_refused_but_the_hubs_ports() -> None:
    runtime = runtime_from_inspect(inspected())
    assert runtime is not None and runtime.networks == {"runtimes": IPv4Interface("10.0.7.5/24")}
    policy = Policy("runtimes", (IPv4Network("192.0.2.1/32"),), SETTINGS)
    settings = policy.for_runtime(runtime)
    assert settings.hub_networks == (HUB_NET, IPv4Network("192.0.2.1/32"))
    assert settings.own_networks == (HUB_NET,)
    elsewhere = Runtime("b" * 64, "x", "bob", 1, {"other": IPv4Interface("10.1.0.2/24")})
    with pytest.raises(LockError, match="not on the hub's network runtimes"):
        policy.for_runtime(elsewhere)


class FakeLock(NamespaceLock):
    def __init__(self, fail: str = "") -> None:
        self.calls: list[str] = []
        self.fail = fail

    def lock(self, runtime: Runtime, settings: RuntimeNamespace) -> None:
        self.calls.append(runtime.id)
        if self.fail:
            raise LockError(self.fail)


def test_the_watch_locks_each_runtime_once_and_forgets_the_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = ["a" * 64]
    lock = FakeLock()
    policy = Policy("runtimes", (), SETTINGS)
    watch = RuntimeWatch(lambda: running, lambda ident: inspected(Id=ident), policy, lock)
    assert watch.sweep() == 1 and watch.sweep() == 0
    running[:] = []
    watch.sweep()
    running[:] = ["a" * 64]  # the same id again (a restarted container): locked again
    assert watch.sweep() == 1 and lock.calls == ["a" * 64, "a" * 64]

    failing = RuntimeWatch(lambda: ["c" * 64], lambda i: inspected(Id=i), policy, FakeLock("no"))
    with caplog.at_level(logging.ERROR):
        failing.sweep(), failing.sweep()  # retried each sweep, said once
    said = [r.getMessage() for r in caplog.records if "NOT locked down" in r.getMessage()]
    assert said == ["runtime khrt-alice of alice is NOT locked down: no"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "where is the hub? give --hub-network, --hub, or both"),
        (["--hub", "10.0.0.0/33"], "is not a network in CIDR notation"),
        (["--hub", "fd00::/64"], "the hub's addresses are IPv4"),
        (["--hub", "10.0.0.1/32", "--hub-ports", "80,x"], "expected comma-separated port"),
        (["--hub", "10.0.0.1/32", "--interval", "0"], "0.1<=x<=60"),
        (["--hub", "10.0.0.1/32", "--proc", "/nonexistent"], "does not exist"),
    ],
)
def test_bad_flags_are_one_line_without_a_traceback(args: list[str], says: str) -> None:
    done = subprocess.run(
        [KERNELHUB, "network", "lock-runtimes", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(re.escape(says), done.stderr), done.stderr


# --- the Swarm spawner's side: runtimes wait for their lock-down -------------------------
def swarm_spawner(wait: float, image_labels: dict[str, str], cmd: list[str] | None = None) -> Any:
    from types import SimpleNamespace

    from kernelhub.spawner.swarm_runtime import SwarmRuntimeSpawner

    user = SimpleNamespace(name="alice", id=1, url="/user/alice/", escaped_name="alice")
    configured = {"cmd": cmd} if cmd else {}
    spawner = SwarmRuntimeSpawner(await_network_lockdown=wait, user=user, **configured)

    async def inspect_image(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"Config": {"Labels": image_labels, "Cmd": ["jupyterhub-singleuser"]}}

    spawner.docker = inspect_image
    spawner.image = "registry:5000/kernelhub/runtime-cpu:latest"
    return spawner


LAUNCHER = {"org.kernelhub.launcher": "kernelhub-runtime"}


@pytest.mark.parametrize(
    ("labels", "cmd", "refused"),
    [
        (LAUNCHER, None, False),
        ({}, None, True),  # the image's own CMD would start the server unguarded
        (LAUNCHER, ["jupyterhub-singleuser"], True),  # so would an operator's `cmd`
        ({"org.kernelhub.launcher": "/bin/sh"}, None, True),
    ],
)
def test_a_waiting_runtime_starts_only_through_the_launcher_that_waits(
    labels: dict[str, str], cmd: list[str] | None, refused: bool
) -> None:
    import asyncio

    from tornado.web import HTTPError

    spawner = swarm_spawner(60, labels, cmd)
    if not refused:
        assert asyncio.run(spawner.get_command())[0] == "kernelhub-runtime"
        return
    with pytest.raises(HTTPError) as refusal:
        asyncio.run(spawner.get_command())
    assert refusal.value.status_code == 503
    assert "has no kernelhub launcher, which waits for" in str(refusal.value.log_message)


def test_without_a_wait_nothing_changes() -> None:
    import asyncio

    spawner = swarm_spawner(0, {})
    assert asyncio.run(spawner.get_command())[0] == "jupyterhub-singleuser"


@pytest.mark.parametrize("wait", [-1, 3601, float("nan")])
def test_a_wait_out_of_range_is_a_config_error(wait: float) -> None:
    from traitlets import TraitError

    with pytest.raises(TraitError, match="expected 0-3600 seconds"):
        swarm_spawner(wait, LAUNCHER)
