"""`kernelhub network lock-runtimes`: each runtime of this node locked down inside its own
network namespace (Swarm's overlays bypass the host's chains; see
``kernelhub.spawner.namespace_rules``). A global service of docker-stack.yml.
"""

from __future__ import annotations

import logging
import signal
import sys
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from types import FrameType
from typing import Any

import click

from kernelhub.clients.network_options import (
    mining_pool_ports,
    parse_networks_option,
    runtime_policy_options,
)
from kernelhub.contract import USER_LABEL
from kernelhub.spawner.namespace_firewall import (
    NamespaceLock,
    Policy,
    Runtime,
    RuntimeWatch,
    node_addresses,
)
from kernelhub.spawner.namespace_rules import RuleError, RuntimeNamespace, namespace_rules
from kernelhub.spawner.network_rules import (
    Address,
    Network,
)


def _hubs(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[IPv4Network, ...]:
    found = parse_networks_option(ctx, param, values)
    if any(not isinstance(n, IPv4Network) for n in found):
        raise click.BadParameter("the hub's addresses are IPv4")
    return tuple(n for n in found if isinstance(n, IPv4Network))


@click.command("lock-runtimes")
@click.option(
    "--hub-network",
    default="",
    metavar="NAME",
    help="The runtimes' network the hub is on: runtimes may open the hub's ports on its "
    "subnet (and nothing else there).",
)
@click.option(
    "--hub",
    "hubs",
    multiple=True,
    metavar="CIDR",
    callback=_hubs,
    help="Where else the hub is, e.g. a hub on a manager's host (repeatable).",
)
@runtime_policy_options
@click.option(
    "--proc",
    default=Path("/proc"),
    show_default=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The host's /proc (in a container: mounted from the host, read-only).",
)
@click.option(
    "--iptables",
    default="iptables",
    show_default=True,
    type=click.Choice(["iptables", "iptables-nft", "iptables-legacy"]),
    help="The iptables command used in the runtimes' namespaces.",
)
@click.option("--no-ipv6", is_flag=True, help="Leave the runtimes' ip6tables alone.")
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.1, 60),
    help="Seconds between two looks for new runtimes (a runtime waits this long at most).",
)
@click.option("--once", is_flag=True, help="Lock the runtimes running now, then exit.")
@click.option(
    "--print", "print_only", is_flag=True, help="Print a runtime's rules; change nothing."
)
def lock_runtimes(
    hub_network: str,
    hubs: tuple[IPv4Network, ...],
    hub_ports: tuple[int, ...],
    server_port: int,
    allow: tuple[Network, ...],
    dns: tuple[Address, ...],
    block_mining_ports: bool,
    signatures: Path | None,
    proc: Path,
    iptables: str,
    no_ipv6: bool,
    interval: float,
    once: bool,
    print_only: bool,
) -> None:
    """Lock every runtime of this node down, inside its own network namespace.

    A runtime may then open connections only to the hub's ports and to the internet,
    and accept them only on its server port: never to or from another runtime, on any
    node, nor to this node, link-local (cloud metadata) or private networks unless
    --allow names them. Runs on the host's network, as root with NET_ADMIN, SYS_ADMIN
    and SYS_PTRACE, talking to the node's engine (DOCKER_HOST; read-only suffices).
    Runtimes whose spawner waits for it (`await_network_lockdown`) start their server
    only once locked.
    """
    if not hub_network and not hubs:
        raise click.UsageError("where is the hub? give --hub-network, --hub, or both")
    try:
        template = RuntimeNamespace(
            hub_networks=hubs or (IPv4Network("0.0.0.0/32"),),  # replaced per runtime
            hub_ports=hub_ports,
            server_port=server_port,
            allow=allow,
            dns_servers=dns,
            node_addresses=node_addresses(Path("/proc")),
            blocked_ports=mining_pool_ports(signatures) if block_mining_ports else (),
        )
    except RuleError as e:
        raise click.UsageError(str(e)) from None
    policy = Policy(hub_network=hub_network, hubs=hubs, template=template)
    if print_only:
        _print_example(policy, no_ipv6)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    watch = RuntimeWatch(*_engine(), policy, NamespaceLock(proc, iptables, not no_ipv6))
    if once:
        watch.sweep()
        if watch.failed:
            raise click.ClickException(f"{len(watch.failed)} runtime(s) not locked down")
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)  # what is locked stays locked: the rules live in the runtimes

    signal.signal(signal.SIGTERM, stop)  # as a container's PID 1 it would be ignored
    watch.run_forever(interval)


def _engine() -> tuple[Any, Any]:
    import docker
    import docker.errors

    client = docker.from_env(timeout=30)

    def list_runtimes() -> list[str]:
        found = client.api.containers(filters={"label": USER_LABEL, "status": "running"})
        return [str(c["Id"]) for c in found]

    def inspect(ident: str) -> dict[str, Any] | None:
        try:
            model: dict[str, Any] = client.api.inspect_container(ident)
        except docker.errors.NotFound:
            return None
        return model

    return list_runtimes, inspect


def _print_example(policy: Policy, no_ipv6: bool) -> None:
    """``--print``: the rules of a runtime at 10.0.0.2/24 on the hub's network."""
    networks = {policy.hub_network: IPv4Interface("10.0.0.2/24")} if policy.hub_network else {}
    example = Runtime(id="0" * 64, name="example", user="example", pid=0, networks=networks)
    settings = policy.for_runtime(example)
    for family in [4] if no_ipv6 else [4, 6]:
        click.echo(f"# IPv{family}, for a runtime at 10.0.0.2/24", err=False)
        click.echo(namespace_rules(settings, family), nl=False)
