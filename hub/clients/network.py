"""`kernelhub network lock-down`: what runtime containers may reach (root, host network).

Run on the Docker host (or in a container with ``network_mode: host`` and the
NET_ADMIN and NET_RAW capabilities), against the runtimes' bridge; see
``kernelhub.spawner.network_rules`` for the rules themselves.
"""

from __future__ import annotations

import signal
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType

import click

from kernelhub.clients.network_options import (
    mining_pool_ports,
    parse_hub_option,
    runtime_policy_options,
)
from kernelhub.spawner.network_firewall import (
    BACKENDS,
    Firewall,
    FirewallError,
    detect_backend,
)
from kernelhub.spawner.network_rules import (
    Address,
    LockDown,
    Network,
    RuleError,
    family_rules,
)


@click.group()
def network() -> None:
    """The runtimes' network: what runtime containers may reach."""


@network.command("lock-down")
@click.option("--bridge", required=True, help="The runtimes network's bridge interface.")
@click.option(
    "--hub",
    "hub",
    callback=parse_hub_option,
    metavar="IP",
    help="The hub's IPv4 address on the bridge (required but with --remove).",
)
@click.option(
    "--hub-on-host",
    is_flag=True,
    help="The hub is a process on the host (--hub is then the bridge's gateway).",
)
@runtime_policy_options
@click.option(
    "--iptables",
    "backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", *BACKENDS]),
    help="The iptables backend: auto uses the one holding Docker's DOCKER-USER chain.",
)
@click.option("--no-ipv6", is_flag=True, help="Leave ip6tables alone.")
@click.option(
    "--watch",
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="Re-apply every SECONDS (the rules then survive Docker restarts and firewall reloads).",
)
@click.option(
    "--check", is_flag=True, help="Only check that the rules are installed (exit 1 if not)."
)
@click.option("--remove", is_flag=True, help="Delete the rules and chains of --bridge.")
@click.option("--print", "print_only", is_flag=True, help="Print the rules; change nothing.")
def lock_down(
    bridge: str,
    hub: IPv4Address | None,
    hub_ports: tuple[int, ...],
    server_port: int,
    hub_on_host: bool,
    allow: tuple[Network, ...],
    dns: tuple[Address, ...],
    block_mining_ports: bool,
    signatures: Path | None,
    backend: str,
    no_ipv6: bool,
    watch: int | None,
    check: bool,
    remove: bool,
    print_only: bool,
) -> None:
    """Refuse runtimes every connection but to the hub and the internet.

    Between containers on the bridge only the hub may connect to a runtime's server
    port and a runtime to the hub's ports. Runtimes reach no address of the host
    itself, and neither link-local (cloud metadata) nor private networks (10/8,
    172.16/12, 192.168/16, 100.64/10, fc00::/7, fe80::/10) unless --allow names them.
    """
    if sum((check, remove, print_only, watch is not None)) > 1:
        raise click.UsageError("--check, --remove, --print and --watch exclude each other")
    if hub is None and not remove:
        raise click.UsageError("--hub is required (except with --remove)")
    blocked = mining_pool_ports(signatures) if block_mining_ports else ()
    try:
        settings = LockDown(
            bridge=bridge,
            hub=hub or IPv4Address("0.0.0.0"),  # unused by --remove
            hub_ports=hub_ports,
            server_port=server_port,
            hub_on_host=hub_on_host,
            allow=allow,
            dns_servers=dns,
            blocked_ports=blocked,
        )
    except RuleError as e:
        raise click.UsageError(str(e)) from None
    if print_only:
        for family in [4] if no_ipv6 else [4, 6]:
            click.echo(_rules_text(settings, family), nl=False)
        return
    try:
        firewall = Firewall(detect_backend() if backend == "auto" else BACKENDS[backend])
        families = [4] if no_ipv6 or not firewall.usable(6) else [4, 6]
        if remove:
            removed = [w for f in families for w in firewall.remove(settings, f)]
            _say(f"removed {', '.join(removed)}" if removed else f"nothing of {bridge} to remove")
        elif check:
            gone = [w for f in families for w in firewall.missing(firewall.rules(settings, f))]
            if gone:
                raise FirewallError(f"not installed: {'; '.join(gone)}")
            _say(f"the rules of {bridge} are installed")
        else:
            _apply(firewall, settings, families)
            if watch is not None:
                _watch(firewall, settings, families, watch)
    except FirewallError as e:
        raise click.ClickException(str(e)) from None


def _rules_text(settings: LockDown, family: int) -> str:
    """``--print``: one family's iptables-restore input, as a first run applies it."""
    # IPv6 hooks into FORWARD unless the engine made an ip6tables DOCKER-USER chain
    rules = family_rules(settings, family, "DOCKER-USER" if family == 4 else "FORWARD")
    return f"# IPv{family}\n" + rules.restore_payload(rules.hooks)


def _say(message: str) -> None:
    click.echo(f"kernelhub network: {message}", err=True)


def _apply(firewall: Firewall, settings: LockDown, families: list[int]) -> list[str]:
    changed = [f"IPv{f} {w}" for f in families for w in firewall.apply(firewall.rules(settings, f))]
    if changed:
        allowed = ", ".join(map(str, settings.allow)) or "nothing"
        _say(
            f"locked down {settings.bridge} ({'/'.join(f'IPv{f}' for f in families)}; "
            f"created {', '.join(changed)}); private ranges allowed: {allowed}"
        )
    return changed


def _watch(firewall: Firewall, settings: LockDown, families: list[int], seconds: int) -> None:
    """Re-apply forever; a failed round (dockerd restarting) is reported and retried."""

    def stop(signum: int, frame: FrameType | None) -> None:
        # the rules stay: a stopped watcher must not open the network
        _say("stopped; the rules stay installed")
        sys.exit(0)

    # as a container's PID 1 a signal without a handler is ignored
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        time.sleep(seconds)
        try:
            _apply(firewall, settings, families)
        except FirewallError as e:
            _say(f"re-applying failed, retrying in {seconds} s: {e}")


def _add_lock_runtimes() -> None:
    # its own module (Swarm's per-namespace rules); a command of this group
    from kernelhub.clients.lock_runtimes import lock_runtimes

    network.add_command(lock_runtimes)


_add_lock_runtimes()
