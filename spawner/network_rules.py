"""What a runtime container may reach, as iptables rules: a pure function from the
lock-down settings to the rules (``kernelhub network lock-down`` applies them).

Runtimes live on one Docker bridge (fixed interface name, inter-container
communication off, the hub at a fixed address on it). Two chains per IP family,
named after the bridge, hold every rule:

* ``KH-FWD-<bridge>``, jumped to from ``DOCKER-USER`` for packets that enter from
  the bridge and are forwarded: to another container on the bridge (seen by iptables
  through br_netfilter), to other Docker networks, to the LAN and the internet.
  Docker evaluates ``DOCKER-USER`` before its own rules and never flushes it, so
  these rules win over Docker's and survive its restarts.
* ``KH-IN-<bridge>``, jumped to from ``INPUT`` for packets from the bridge to the
  host itself (the bridge's gateway address, any host service, published ports'
  proxies): refused, except replies and, with the hub on the host, the hub's ports.

On the bridge only hub -> runtime (the server port) and runtime -> hub (the hub's
ports) open connections; everything else between containers is refused, so a
runtime reaches no other runtime and no service the hub can see. Off the bridge, the
operator's allow-list first, then link-local (cloud metadata) and the private ranges
refused, optionally the mining-pool ports too; the rest (the internet) is left to
Docker's own rules. Connections to the DNS servers the engine forwards containers'
queries to (often a private or link-local address in a cloud) stay open on port 53.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# Link-local first: it holds the clouds' metadata services (169.254.169.254).
BLOCKED_V4 = tuple(
    IPv4Network(n)
    for n in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
BLOCKED_V6 = tuple(IPv6Network(n) for n in ("fe80::/10", "fc00::/7"))
DEFAULT_HUB_PORTS = (8000, 8081)  # the hub's proxy and its API (runtimes call both)
DEFAULT_SERVER_PORT = 8888  # the runtime's Jupyter server, which the hub's proxy calls
MULTIPORT_MAX = 15  # iptables' multiport match takes at most 15 ports per rule
# A Linux interface name: at most 15 characters; these are safe in a rule unquoted.
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
REJECT = {
    4: "REJECT --reject-with icmp-admin-prohibited",
    6: "REJECT --reject-with icmp6-adm-prohibited",
}
ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
# Without these IPv6 neighbour discovery to the gateway fails, and with it all IPv6.
NEIGHBOUR_DISCOVERY = ("router-solicitation", "neighbour-solicitation", "neighbour-advertisement")


class RuleError(ValueError):
    """Settings that make no sound rule set; the message is one line, for the operator."""


@dataclass(frozen=True)
class LockDown:
    """What the runtimes on ``bridge`` may reach; see the module's docstring."""

    bridge: str
    hub: IPv4Address
    hub_ports: tuple[int, ...] = DEFAULT_HUB_PORTS
    server_port: int = DEFAULT_SERVER_PORT
    # the hub is a process on the host, reaching runtimes from the bridge's gateway
    hub_on_host: bool = False
    allow: tuple[Network, ...] = ()
    dns_servers: tuple[Address, ...] = ()
    blocked_ports: tuple[int, ...] = ()  # remote TCP ports refused everywhere (mining pools)

    def __post_init__(self) -> None:
        if not _BRIDGE_NAME.fullmatch(self.bridge):
            raise RuleError(
                f"bridge {self.bridge!r}: expected a network interface name "
                "(1-15 letters, digits, '_', '.', '-')"
            )
        for port in (*self.hub_ports, self.server_port, *self.blocked_ports):
            if not 0 < port < 65536:
                raise RuleError(f"port {port}: expected 1-65535")
        if not self.hub_ports:
            raise RuleError("at least one hub port is needed")

    @property
    def forward_chain(self) -> str:
        return f"KH-FWD-{self.bridge}"

    @property
    def input_chain(self) -> str:
        return f"KH-IN-{self.bridge}"


@dataclass(frozen=True)
class FamilyRules:
    """One IP family's chains (name -> rule specs, in order) and the jumps into them."""

    family: int
    chains: dict[str, list[str]]
    hooks: list[tuple[str, str]]  # (built-in or Docker chain, rule spec jumping to ours)

    def restore_payload(self, missing_hooks: Iterable[tuple[str, str]] = ()) -> str:
        """Input for ``iptables-restore --noflush``: declaring a chain (``:NAME``) creates
        it or empties it, so the chains' new contents replace the old in one
        transaction; ``missing_hooks`` are inserted first in their parent chains."""
        lines = ["*filter"]
        lines += [f":{name} - [0:0]" for name in self.chains]
        for name, rules in self.chains.items():
            lines += [f"-A {name} {rule}" for rule in rules]
        lines += [f"-I {parent} 1 {spec}" for parent, spec in missing_hooks]
        lines += ["COMMIT", ""]
        return "\n".join(lines)


def parse_network(text: str) -> Network:
    """A CIDR (or a bare address, meaning just it); RuleError for anything else."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise RuleError(f"{text!r} is not a network in CIDR notation ({e})") from None


def parse_ports(text: str) -> tuple[int, ...]:
    """``"8000,8081"`` -> (8000, 8081); RuleError for anything else."""
    try:
        ports = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise RuleError(f"{text!r}: expected comma-separated port numbers") from None
    if not all(0 < p < 65536 for p in ports):
        raise RuleError(f"{text!r}: ports are 1-65535")
    return ports


def _chunks(ports: Sequence[int]) -> list[str]:
    ordered = sorted(set(ports))
    return [
        ",".join(str(p) for p in ordered[i : i + MULTIPORT_MAX])
        for i in range(0, len(ordered), MULTIPORT_MAX)
    ]


def _dports(ports: Sequence[int]) -> list[str]:
    """Match specs for TCP to any of ``ports`` (one rule each, multiport where needed)."""
    if len(ports) == 1:
        return [f"-p tcp --dport {ports[0]}"]
    return [f"-p tcp -m multiport --dports {chunk}" for chunk in _chunks(ports)]


def family_rules(
    settings: LockDown, family: int, forward_parent: str = "DOCKER-USER"
) -> FamilyRules:
    """The rules for IPv4 (``family=4``) or IPv6 (``family=6``).

    ``forward_parent`` is where forwarded packets are hooked: Docker's DOCKER-USER,
    which exists for IPv6 only when the engine manages ip6tables (else FORWARD)."""
    if family not in (4, 6):
        raise RuleError(f"IP family {family}: expected 4 or 6")
    s, br, reject = settings, settings.bridge, REJECT[family]
    allow = [n for n in s.allow if n.version == family]
    dns = [a for a in s.dns_servers if a.version == family]
    blocked = BLOCKED_V4 if family == 4 else BLOCKED_V6
    # the hub's address is IPv4: over IPv6 nothing on the bridge may talk at all
    hub_on_bridge = family == 4 and not s.hub_on_host

    fwd = [ESTABLISHED]
    if hub_on_bridge:
        fwd.append(f"-o {br} -s {s.hub}/32 -p tcp --dport {s.server_port} -j ACCEPT")
        fwd += [f"-o {br} -d {s.hub}/32 {match} -j ACCEPT" for match in _dports(s.hub_ports)]
    # every other packet between two containers of the bridge: runtime to runtime
    fwd.append(f"-o {br} -j {reject}")
    fwd += _dns(dns, "RETURN")
    fwd += [f"-d {n} -j RETURN" for n in allow]
    fwd += [f"-d {n} -j {reject}" for n in blocked]
    fwd += [f"{match} -j {reject}" for match in _dports(s.blocked_ports)] if s.blocked_ports else []
    fwd.append("-j RETURN")  # the internet: Docker's own rules decide

    inp = [ESTABLISHED]
    if family == 6:
        inp += [f"-p ipv6-icmp --icmpv6-type {t} -j ACCEPT" for t in NEIGHBOUR_DISCOVERY]
    if family == 4 and s.hub_on_host:
        inp += [f"-d {s.hub}/32 {match} -j ACCEPT" for match in _dports(s.hub_ports)]
    inp += _dns(dns, "ACCEPT")
    inp += [f"-d {n} -j ACCEPT" for n in allow]
    inp.append(f"-j {reject}")

    chains = {s.forward_chain: fwd, s.input_chain: inp}
    hooks = [
        (forward_parent, f"-i {br} -j {s.forward_chain}"),
        ("INPUT", f"-i {br} -j {s.input_chain}"),
    ]
    return FamilyRules(family, chains, hooks)


def _dns(servers: Sequence[Address], verdict: str) -> list[str]:
    host = {4: 32, 6: 128}
    return [
        f"-d {a}/{host[a.version]} -p {proto} --dport 53 -j {verdict}"
        for a in servers
        for proto in ("udp", "tcp")
    ]


def nameservers(resolv_conf: str) -> tuple[Address, ...]:
    """The non-loopback ``nameserver`` addresses of a resolv.conf text, in order.

    Docker's embedded DNS forwards a container's queries to these from the
    container's own network namespace, so they pass the rules like any packet."""
    found: list[Address] = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            if not address.is_loopback and address not in found:
                found.append(address)
    return tuple(found)
