"""Option parsers the `kernelhub network` commands share: networks, ports, resolvers,
the mining-pool ports; each turns bad input into click's one-line usage error."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address
from pathlib import Path

import click

from kernelhub.spawner.network_firewall import host_dns_servers
from kernelhub.spawner.network_rules import (
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
