"""Applies, checks and removes the runtime network's rules (``network_rules``) with the
host's iptables, in the host's network namespace (root, or CAP_NET_ADMIN).

The rules must live in the same iptables backend (nf_tables or legacy) that dockerd
uses, or they would sit in tables the engine's packets never pass. The backend that
holds Docker's ``DOCKER-USER`` chain is therefore the one used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .network_rules import Address, FamilyRules, LockDown, family_rules, nameservers

TIMEOUT = 30  # seconds for one iptables call
WAIT = ["--wait=5"]  # the legacy backend's xtables lock: wait for it rather than fail
BACKENDS = {"nft": "iptables-nft", "legacy": "iptables-legacy", "default": "iptables"}
# docker reads the upstream resolvers from here when /etc/resolv.conf names only a
# local stub (systemd-resolved's 127.0.0.53)
RESOLV_CONFS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))


class FirewallError(RuntimeError):
    """iptables refused or is missing; the message is one line, for the operator."""


def detect_backend() -> str:
    """The iptables command whose tables hold Docker's DOCKER-USER chain."""
    for command in (BACKENDS["nft"], BACKENDS["legacy"]):
        if shutil.which(command) and _succeeds([command, *WAIT, "-S", "DOCKER-USER"]):
            return command
    if shutil.which(BACKENDS["default"]) is None:
        raise FirewallError("iptables is not installed (Debian: the iptables package)")
    raise FirewallError(
        "no DOCKER-USER chain in the nf_tables or legacy iptables: is dockerd running, "
        "and does this command run in the host's network namespace (network_mode: host)?"
    )


def host_dns_servers(files: tuple[Path, ...] = RESOLV_CONFS) -> tuple[Address, ...]:
    """The resolvers Docker forwards containers' DNS queries to (see ``nameservers``)."""
    for path in files:
        try:
            servers = nameservers(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if servers:
            return servers
    return ()


def _succeeds(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class Firewall:
    """The iptables and ip6tables of one backend (``iptables``, ``iptables-nft``, ...)."""

    def __init__(self, command: str = "iptables") -> None:
        self.commands = {4: command, 6: command.replace("iptables", "ip6tables", 1)}

    def _run(self, family: int, args: list[str], stdin: str | None = None) -> None:
        command = self.commands[family]
        if stdin is not None:
            command = f"{command}-restore"
        argv = [command, *WAIT, *args]
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise FirewallError(
                f"{command} is not installed (Debian: the iptables package)"
            ) from None
        except subprocess.TimeoutExpired:
            raise FirewallError(f"{command} did not finish within {TIMEOUT} s") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise FirewallError(f"{command} {' '.join(args[:3])}...: {reason}")

    def _ok(self, family: int, args: list[str]) -> bool:
        return _succeeds([self.commands[family], *WAIT, *args])

    def usable(self, family: int) -> bool:
        """Whether this family's tables can be read (ip6tables may be absent or off)."""
        return shutil.which(self.commands[family]) is not None and self._ok(family, ["-S", "INPUT"])

    def chain_exists(self, family: int, chain: str) -> bool:
        return self._ok(family, ["-S", chain])

    def has_rule(self, family: int, chain: str, spec: str) -> bool:
        return self._ok(family, ["-C", chain, *spec.split()])

    def forward_parent(self, family: int) -> str:
        """DOCKER-USER where Docker made it (always for IPv4), else FORWARD."""
        if family == 4 or self.chain_exists(family, "DOCKER-USER"):
            return "DOCKER-USER"
        return "FORWARD"

    def rules(self, settings: LockDown, family: int) -> FamilyRules:
        return family_rules(settings, family, self.forward_parent(family))

    def apply(self, rules: FamilyRules) -> list[str]:
        """Install or replace the chains' contents, and hook them where not yet hooked,
        in one ``iptables-restore`` transaction. Returns what had to be (re)created
        (empty when the rules were only refreshed)."""
        family = rules.family
        if family == 4 and not self.chain_exists(4, "DOCKER-USER"):
            raise FirewallError("no DOCKER-USER chain: is dockerd running on this host?")
        created = [f"chain {name}" for name in rules.chains if not self.chain_exists(family, name)]
        missing = [
            (parent, spec)
            for parent, spec in rules.hooks
            if not self.has_rule(family, parent, spec)
        ]
        self._run(family, ["--noflush"], stdin=rules.restore_payload(missing))
        return created + [f"jump from {parent}" for parent, _ in missing]

    def missing(self, rules: FamilyRules) -> list[str]:
        """What of ``rules`` is not installed: absent chains or jumps into them."""
        family = rules.family
        gone = [f"chain {name}" for name in rules.chains if not self.chain_exists(family, name)]
        gone += [
            f"jump {spec!r} in {parent}"
            for parent, spec in rules.hooks
            if not self.has_rule(family, parent, spec)
        ]
        return [f"IPv{family} {what}" for what in gone]

    def remove(self, settings: LockDown, family: int) -> list[str]:
        """Delete the jumps and the chains of ``settings.bridge``; returns what was there."""
        br, removed = settings.bridge, []
        jumps = [
            (parent, f"-i {br} -j {chain}")
            for chain, parents in (
                (settings.forward_chain, ("DOCKER-USER", "FORWARD")),
                (settings.input_chain, ("INPUT",)),
            )
            for parent in parents
        ]
        for parent, spec in jumps:
            while self.has_rule(family, parent, spec):
                self._run(family, ["-D", parent, *spec.split()])
                removed.append(f"jump from {parent}")
        for chain in (settings.forward_chain, settings.input_chain):
            if self.chain_exists(family, chain):
                # nf_tables refuses to delete a chain that still has rules
                self._run(family, ["-F", chain])
                self._run(family, ["-X", chain])
                removed.append(f"chain {chain}")
        return removed
