"""Option parsers the `kernelhub network` commands share: networks, ports, resolvers,
the mining-pool ports; each turns bad input into click's one-line usage error."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypeVar

import click

from kernelhub.spawner.network_firewall import host_dns_servers
from kernelhub.spawner.network_rules import (
    DEFAULT_HUB_PORTS,
    DEFAULT_SERVER_PORT,
    Address,
    Network,
    RuleError,
    parse_network,
    parse_ports,
)


def parse_networks_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[Network, ...]:
    # the environment variable holds several, separated by spaces or commas
    texts = [t for value in values for t in value.replace(",", " ").split()]
    try:
        return tuple(parse_network(t) for t in texts)
    except RuleError as e:
        raise click.BadParameter(str(e)) from None


def parse_ports_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        return parse_ports(value)
    except RuleError as e:
        raise click.BadParameter(str(e)) from None


def parse_hub_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> IPv4Address | None:
    if value is None:
        return None
    try:
        return IPv4Address(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 address") from None


def parse_dns_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[Address, ...]:
    if values == ("auto",):
        return host_dns_servers()
    if values == ("none",):
        return ()
    try:
        return tuple(ipaddress.ip_address(v) for v in values)
    except ValueError as e:
        raise click.BadParameter(f"{e}; expected addresses, 'auto' or 'none'") from None


def mining_pool_ports(signatures: Path | None) -> tuple[int, ...]:
    """The detector's mining-pool ports (its shipped signature file unless given)."""
    from kernelhub.quotas.signatures import SignatureError, load_signatures

    try:
        return tuple(sorted(load_signatures(signatures).pool_ports))
    except (OSError, SignatureError) as e:
        raise click.BadParameter(str(e), param_hint="--signatures") from None


F = TypeVar("F", bound=Callable[..., object])


def runtime_policy_options(command: F) -> F:
    """The options both firewalls share, what a runtime may reach: ``hub_ports``,
    ``server_port``, ``allow``, ``dns``, ``block_mining_ports`` and ``signatures``."""
    options = [
        click.option(
            "--hub-ports",
            default=",".join(map(str, DEFAULT_HUB_PORTS)),
            show_default=True,
            callback=parse_ports_option,
            help="The hub's TCP ports runtimes may connect to (proxy, API).",
        ),
        click.option(
            "--server-port",
            default=DEFAULT_SERVER_PORT,
            show_default=True,
            type=click.IntRange(1, 65535),
            help="The runtimes' server port, the one the hub's proxy connects to.",
        ),
        click.option(
            "--allow",
            multiple=True,
            metavar="CIDR",
            envvar="KERNELHUB_RUNTIME_ALLOW",
            callback=parse_networks_option,
            help="A private or link-local network runtimes may reach after all "
            "(repeatable; env KERNELHUB_RUNTIME_ALLOW, separated by spaces).",
        ),
        click.option(
            "--dns",
            multiple=True,
            default=("auto",),
            show_default=True,
            callback=parse_dns_option,
            help="Resolvers runtimes' DNS queries go to (repeatable): 'auto' reads the "
            "host's resolv.conf as Docker does, 'none' opens none.",
        ),
        click.option(
            "--block-mining-ports",
            is_flag=True,
            help="Also refuse TCP to the mining-pool ports of the detector's signature file.",
        ),
        click.option(
            "--signatures",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="The signature file for --block-mining-ports (default: the shipped one).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
