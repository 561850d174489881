"""What a runtime may reach, as iptables rules inside its own network namespace: a pure
function from one runtime's settings to ``iptables-restore`` input
(``kernelhub network lock-runtimes`` applies it to every runtime of a node).

Why inside the runtime, not on the host: on a Swarm overlay, packets between two
containers of the network never cross the host's iptables chains (they are bridged
in the overlay's own namespace, or leave the node in VXLAN), and overlays have no
``enable_icc=false``. Rules in the runtime's namespace see every packet it sends or
receives, whichever node the peer is on. The runtime's user cannot change them: it is
not root and holds no capability (the spawner's ``cap_drop: ALL``).

The filter table of the namespace, replaced whole:

* out: loopback, replies; never Swarm's or the engine's ports (``CLUSTER_*_PORTS``)
  anywhere; DNS to the engine's resolvers, and NEW connections to the
  hub's ports where the hub may be (``hub_networks``: its network's subnet, or its
  own addresses); then the operator's allow-list; everything else on the runtime's
  own networks (other runtimes), the node's own addresses, link-local (cloud
  metadata) and the private ranges refused, optionally the mining-pool ports too;
  the rest (the internet) accepted;
* in: loopback, replies, and NEW connections to the server port only (the hub's proxy
  reaches it through the port the node publishes); nothing else.

Every runtime's own rules refuse what it opens to another runtime, so one without
them must not run user code: the runtime's launcher waits for ``LOCKED_MARK`` (set on
its loopback interface after the rules, which only a holder of CAP_NET_ADMIN in its
namespace can do) before it starts the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .network_rules import (
    BLOCKED_V4,
    DEFAULT_HUB_PORTS,
    DEFAULT_SERVER_PORT,
    ESTABLISHED,
    REJECT,
    Address,
    Network,
    RuleError,
    _dns,
    _dports,
)

# Swarm's and the engine's own ports, refused to runtimes on EVERY address (nodes may have
# public ones, which the private ranges do not cover): cluster management (2377),
# gossip (7946), VXLAN (4789: a forged frame would land on an overlay) with IPsec's ESP,
# and the engine's API (2375, 2376)
CLUSTER_TCP_PORTS = (2375, 2376, 2377, 7946)
CLUSTER_UDP_PORTS = (4789, 7946)

# the loopback interface's alias once the rules are in; the same text is in
# images/common/kernelhub-runtime, which waits for it (tests/test_namespace_rules.py)
LOCKED_MARK = "kernelhub-locked-down"
IN_CHAIN, OUT_CHAIN = "KH-RUNTIME-IN", "KH-RUNTIME-OUT"


@dataclass(frozen=True)
class RuntimeNamespace:
    """One runtime's settings; see the module's docstring."""

    hub_networks: tuple[IPv4Network, ...]
    own_networks: tuple[IPv4Network, ...] = ()
    hub_ports: tuple[int, ...] = DEFAULT_HUB_PORTS
    server_port: int = DEFAULT_SERVER_PORT
    allow: tuple[Network, ...] = ()
    dns_servers: tuple[Address, ...] = ()
    node_addresses: tuple[IPv4Address, ...] = ()
    blocked_ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.hub_networks:
            raise RuleError("where the hub is must be known: a --hub-network or a --hub")
        for port in (*self.hub_ports, self.server_port, *self.blocked_ports):
            if not 0 < port < 65536:
                raise RuleError(f"port {port}: expected 1-65535")
        if not self.hub_ports:
            raise RuleError("at least one hub port is needed")


def namespace_rules(settings: RuntimeNamespace, family: int) -> str:
    """``iptables-restore`` (``family=4``) or ``ip6tables-restore`` (6) input: the whole
    filter table of the runtime's namespace. Over IPv6 only loopback and replies pass:
    the hub and the runtimes' networks are IPv4."""
    if family not in (4, 6):
        raise RuleError(f"IP family {family}: expected 4 or 6")
    s, reject = settings, REJECT[family]
    inbound = ["-i lo -j ACCEPT", ESTABLISHED]
    outbound = ["-o lo -j ACCEPT", ESTABLISHED]
    if family == 4:
        inbound.append(f"-p tcp --dport {s.server_port} -j ACCEPT")
        outbound += [f"{match} -j {reject}" for match in _dports(CLUSTER_TCP_PORTS)]
        outbound += [
            f"-p udp -m multiport --dports {','.join(map(str, CLUSTER_UDP_PORTS))} -j {reject}",
            f"-p esp -j {reject}",
        ]
        outbound += _dns([a for a in s.dns_servers if a.version == 4], "ACCEPT")
        outbound += [
            f"-d {network} {match} -j ACCEPT"
            for network in s.hub_networks
            for match in _dports(s.hub_ports)
        ]
        outbound += [f"-d {n} -j ACCEPT" for n in s.allow if n.version == 4]
        refused: list[str] = [str(n) for n in s.own_networks]
        refused += [f"{a}/32" for a in s.node_addresses]
        refused += [str(n) for n in BLOCKED_V4]
        outbound += [f"-d {n} -j {reject}" for n in _unique(refused)]
        if s.blocked_ports:
            outbound += [f"{match} -j {reject}" for match in _dports(s.blocked_ports)]
        outbound.append("-j ACCEPT")
    else:
        outbound.append(f"-j {reject}")
    inbound.append("-j DROP")
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        f":{IN_CHAIN} - [0:0]",
        f":{OUT_CHAIN} - [0:0]",
        f"-A INPUT -j {IN_CHAIN}",
        f"-A OUTPUT -j {OUT_CHAIN}",
        *(f"-A {IN_CHAIN} {rule}" for rule in inbound),
        *(f"-A {OUT_CHAIN} {rule}" for rule in outbound),
        "COMMIT",
        "",
    ]
    return "\n".join(lines)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def local_addresses(fib_trie: str) -> tuple[IPv4Address, ...]:
    """The node's own IPv4 addresses (but loopback) from ``/proc/net/fib_trie``: each
    address line followed by a ``/32 host LOCAL`` line is one of its interfaces'."""
    found: list[IPv4Address] = []
    previous = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("/32 host LOCAL") and previous:
            try:
                address = IPv4Address(previous)
            except ValueError:
                previous = ""
                continue
            if not address.is_loopback and address not in found:
                found.append(address)
        previous = text[4:] if text.startswith(("|-- ", "+-- ")) else ""
    return tuple(found)
