"""The runtime network's rules as a table: settings in, iptables rules out (no root).

`tests/security/test_runtime_network.py` applies the same rules to a real bridge and
attacks through them; this file pins down what the rules say, rule by rule.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest
from click.testing import CliRunner

from kernelhub.cli import main
from kernelhub.spawner.network_rules import (
    BLOCKED_V4,
    BLOCKED_V6,
    LockDown,
    RuleError,
    family_rules,
    nameservers,
    parse_network,
    parse_ports,
)

BR = "kh-runtimes"
HUB = IPv4Address("10.212.0.2")
FWD, IN = f"KH-FWD-{BR}", f"KH-IN-{BR}"
EST = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
R4 = "REJECT --reject-with icmp-admin-prohibited"
R6 = "REJECT --reject-with icmp6-adm-prohibited"
PRIVATE_V4 = [f"-d {n} -j {R4}" for n in BLOCKED_V4]

# (case, settings, family, expected forward chain, expected input chain)
TABLE = [
    (
        "hub in a container on the bridge (the compose deployment)",
        LockDown(BR, HUB),
        4,
        [
            EST,
            f"-o {BR} -s 10.212.0.2/32 -p tcp --dport 8888 -j ACCEPT",
            f"-o {BR} -d 10.212.0.2/32 -p tcp -m multiport --dports 8000,8081 -j ACCEPT",
            f"-o {BR} -j {R4}",  # runtime to runtime, and to the hub's other ports
            f"-d 169.254.0.0/16 -j {R4}",
            f"-d 10.0.0.0/8 -j {R4}",
            f"-d 172.16.0.0/12 -j {R4}",
            f"-d 192.168.0.0/16 -j {R4}",
            f"-d 100.64.0.0/10 -j {R4}",
            "-j RETURN",
        ],
        [EST, f"-j {R4}"],
    ),
    (
        "hub a process on the host, reached through the bridge's gateway",
        LockDown(BR, IPv4Address("10.212.0.1"), hub_ports=(8000,), hub_on_host=True),
        4,
        [EST, f"-o {BR} -j {R4}", *PRIVATE_V4, "-j RETURN"],
        [EST, "-d 10.212.0.1/32 -p tcp --dport 8000 -j ACCEPT", f"-j {R4}"],
    ),
    (
        "resolvers and the allow-list before the private ranges, mining ports after",
        LockDown(
            BR,
            HUB,
            hub_ports=(8081,),
            server_port=9999,
            allow=(ip_network("10.1.0.0/16"), ip_network("fd00::/8")),
            dns_servers=(ip_address("10.255.255.53"),),
            blocked_ports=tuple(range(3000, 3017)),
        ),
        4,
        [
            EST,
            f"-o {BR} -s 10.212.0.2/32 -p tcp --dport 9999 -j ACCEPT",
            f"-o {BR} -d 10.212.0.2/32 -p tcp --dport 8081 -j ACCEPT",
            f"-o {BR} -j {R4}",
            "-d 10.255.255.53/32 -p udp --dport 53 -j RETURN",
            "-d 10.255.255.53/32 -p tcp --dport 53 -j RETURN",
            "-d 10.1.0.0/16 -j RETURN",
            *PRIVATE_V4,
            # at most 15 ports in one multiport match
            "-p tcp -m multiport --dports " + ",".join(map(str, range(3000, 3015))) + f" -j {R4}",
            f"-p tcp -m multiport --dports 3015,3016 -j {R4}",
            "-j RETURN",
        ],
        [
            EST,
            "-d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT",
            "-d 10.255.255.53/32 -p tcp --dport 53 -j ACCEPT",
            "-d 10.1.0.0/16 -j ACCEPT",
            f"-j {R4}",
        ],
    ),
    (
        "IPv6: nothing on the bridge talks (the hub is IPv4), ULA and link-local refused",
        LockDown(BR, HUB, allow=(ip_network("10.1.0.0/16"), ip_network("fd00:1::/64"))),
        6,
        [
            EST,
            f"-o {BR} -j {R6}",
            "-d fd00:1::/64 -j RETURN",
            f"-d fe80::/10 -j {R6}",
            f"-d fc00::/7 -j {R6}",
            "-j RETURN",
        ],
        [
            EST,
            "-p ipv6-icmp --icmpv6-type router-solicitation -j ACCEPT",
            "-p ipv6-icmp --icmpv6-type neighbour-solicitation -j ACCEPT",
            "-p ipv6-icmp --icmpv6-type neighbour-advertisement -j ACCEPT",
            "-d fd00:1::/64 -j ACCEPT",
            f"-j {R6}",
        ],
    ),
]


@pytest.mark.parametrize(
    ("settings", "family", "forward", "inbound"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_rule_table(
    settings: LockDown, family: int, forward: list[str], inbound: list[str]
) -> None:
    rules = family_rules(settings, family)
    assert rules.chains == {FWD: forward, IN: inbound}
    assert rules.hooks == [("DOCKER-USER", f"-i {BR} -j {FWD}"), ("INPUT", f"-i {BR} -j {IN}")]


def test_every_blocked_range_is_refused() -> None:
    """The issue's list: link-local (metadata) and every private range, both families."""
    assert [str(n) for n in BLOCKED_V4] == [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
    ]
    assert [str(n) for n in BLOCKED_V6] == ["fe80::/10", "fc00::/7"]


def test_restore_payload_replaces_chains_in_one_transaction() -> None:
    rules = family_rules(LockDown(BR, HUB, hub_on_host=True), 4)
    payload = rules.restore_payload([("INPUT", f"-i {BR} -j {IN}")])
    assert payload.splitlines() == [
        "*filter",
        f":{FWD} - [0:0]",  # created, or emptied when it exists
        f":{IN} - [0:0]",
        *[f"-A {FWD} {r}" for r in rules.chains[FWD]],
        *[f"-A {IN} {r}" for r in rules.chains[IN]],
        f"-I INPUT 1 -i {BR} -j {IN}",
        "COMMIT",
    ]


def test_ipv6_hooks_into_forward_without_dockers_chain() -> None:
    rules = family_rules(LockDown(BR, HUB), 6, forward_parent="FORWARD")
    assert rules.hooks[0] == ("FORWARD", f"-i {BR} -j {FWD}")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LockDown("", HUB), "bridge ''"),
        (lambda: LockDown("a-bridge-name-too-long", HUB), "interface name"),
        (lambda: LockDown("br0 -j ACCEPT", HUB), "interface name"),
        (lambda: LockDown(BR, HUB, hub_ports=()), "at least one hub port"),
        (lambda: LockDown(BR, HUB, server_port=0), "port 0"),
        (lambda: LockDown(BR, HUB, blocked_ports=(70000,)), "port 70000"),
        (lambda: family_rules(LockDown(BR, HUB), 5), "IP family 5"),
        (lambda: parse_network("10.1.0.1/16"), "host bits set"),
        (lambda: parse_network("example.org"), "not a network"),
        (lambda: parse_ports("8000,http"), "comma-separated"),
        (lambda: parse_ports("8000,0"), "1-65535"),
    ],
)
def test_bad_settings_are_refused(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuleError, match=message):
        make()


def test_nameservers() -> None:
    text = (
        "# a comment\nsearch example\nnameserver 10.255.255.53\nnameserver 127.0.0.53\n"
        "nameserver fe80::1%eth0\nnameserver bogus\nnameserver 10.255.255.53\noptions edns0\n"
    )
    assert nameservers(text) == (ip_address("10.255.255.53"), ip_address("fe80::1"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bridge", BR], "--hub is required"),
        (["--bridge", BR, "--hub", "hub.example"], "not an IPv4 address"),
        (["--bridge", BR, "--hub", "10.0.0.2", "--allow", "10.0.0.1/8"], "host bits set"),
        (["--bridge", BR, "--hub", "10.0.0.2", "--hub-ports", "80,x"], "comma-separated"),
        (["--bridge", BR, "--hub", "10.0.0.2", "--dns", "resolver"], "'auto' or 'none'"),
        (["--bridge", "x" * 16, "--hub", "10.0.0.2"], "interface name"),
        (["--bridge", BR, "--remove", "--check"], "exclude each other"),
        (["--bridge", BR, "--hub", "10.0.0.2", "--watch", "0"], "--watch"),
    ],
)
def test_cli_refuses_bad_flags_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["network", "lock-down", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_prints_the_rules_without_root() -> None:
    args = ["--bridge", BR, "--hub", "10.212.0.2", "--allow", "10.1.0.0/16 192.168.7.0/24"]
    args += ["--dns", "none", "--block-mining-ports", "--print"]
    result = CliRunner().invoke(main, ["network", "lock-down", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"-A {FWD} -d 192.168.7.0/24 -j RETURN" in lines
    assert f"-I DOCKER-USER 1 -i {BR} -j {FWD}" in lines
    assert f"-I FORWARD 1 -i {BR} -j {FWD}" in lines  # IPv6
    # the mining-pool ports of the shipped signature file (3333 is Stratum's classic)
    assert any("--dports" in line and "3333" in line and "REJECT" in line for line in lines)
