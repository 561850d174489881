"""Locks each runtime of this node down inside its own network namespace
(``namespace_rules``), as soon as it runs: ``kernelhub network lock-runtimes``.

It needs the host's /proc (``--proc``; the host's PID namespace), CAP_SYS_PTRACE to
open a runtime's namespace (another user's process), CAP_SYS_ADMIN to enter it and
CAP_NET_ADMIN there; and the node's engine (read-only: listing and inspecting
runtime containers, which the node's socket guard allows).

A process id is only a number: between the engine's answer and ``nsenter`` the
runtime may exit and its number go to another process, even one of the host's
network namespace, whose filter table the rules would then replace. So the namespace
is opened first, and used only if the process behind the number is still in the
runtime's container (its cgroup names the container) and the namespace is not this
process's own (the host's, when run with the host's network).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from kernelhub.contract import USER_LABEL
from kernelhub.quotas.containers import container_id

from .namespace_rules import LOCKED_MARK, RuntimeNamespace, namespace_rules

log = logging.getLogger("kernelhub.lock-runtimes")
TIMEOUT = 30  # seconds for one command in a namespace


class LockError(RuntimeError):
    """A runtime could not be locked down; the message is one line, for the operator."""


@dataclass(frozen=True)
class Runtime:
    """A running runtime container, as the engine describes it."""

    id: str
    name: str
    user: str
    pid: int
    # network name -> the runtime's address and prefix there
    networks: dict[str, IPv4Interface]


def runtime_from_inspect(model: dict[str, Any]) -> Runtime | None:
    """A running runtime from ``GET /containers/ID/json``; None for anything else."""
    labels = (model.get("Config") or {}).get("Labels") or {}
    state = model.get("State") or {}
    pid = state.get("Pid")
    if USER_LABEL not in labels or not state.get("Running") or not isinstance(pid, int):
        return None
    networks: dict[str, IPv4Interface] = {}
    for name, endpoint in ((model.get("NetworkSettings") or {}).get("Networks") or {}).items():
        address, prefix = (endpoint or {}).get("IPAddress"), (endpoint or {}).get("IPPrefixLen")
        if address and isinstance(prefix, int):
            networks[str(name)] = IPv4Interface(f"{address}/{prefix}")
    return Runtime(
        id=str(model["Id"]),
        name=str(model.get("Name", "")).lstrip("/"),
        user=str(labels[USER_LABEL]),
        pid=pid,
        networks=networks,
    )


@dataclass(frozen=True)
class Policy:
    """What every runtime of the node gets; ``for_runtime`` adds its own networks."""

    hub_network: str  # "" when the hub is not on the runtimes' network
    hubs: tuple[IPv4Network, ...]
    template: RuntimeNamespace

    def for_runtime(self, runtime: Runtime) -> RuntimeNamespace:
        hub_networks = list(self.hubs)
        if self.hub_network:
            on = runtime.networks.get(self.hub_network)
            if on is None:
                raise LockError(f"it is not on the hub's network {self.hub_network}")
            hub_networks.insert(0, on.network)
        own = tuple(dict.fromkeys(i.network for i in runtime.networks.values()))
        return replace(self.template, hub_networks=tuple(hub_networks), own_networks=own)


class NamespaceLock:
    """Applies a runtime's rules in its namespace, then marks it locked."""

    def __init__(self, proc: Path, iptables: str = "iptables", ipv6: bool = True) -> None:
        self.proc = proc
        self.commands = {4: iptables, 6: iptables.replace("iptables", "ip6tables", 1)}
        self.families = (4, 6) if ipv6 else (4,)
        self.own_namespace = os.stat("/proc/self/ns/net").st_ino

    def lock(self, runtime: Runtime, settings: RuntimeNamespace) -> None:
        try:
            fd = os.open(self.proc / str(runtime.pid) / "ns" / "net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise LockError(f"cannot open its network namespace: {e.strerror}") from None
        try:
            self._check_still_the_runtime(runtime, fd)
            enter = ["nsenter", f"--net=/proc/self/fd/{fd}"]
            for family in self.families:
                payload = namespace_rules(settings, family)
                self._run([*enter, f"{self.commands[family]}-restore"], fd, payload)
            # after the rules, and only then: the launcher starts the server on this
            self._run([*enter, "ip", "link", "set", "dev", "lo", "alias", LOCKED_MARK], fd)
        finally:
            os.close(fd)

    def _check_still_the_runtime(self, runtime: Runtime, fd: int) -> None:
        if os.fstat(fd).st_ino == self.own_namespace:
            raise LockError("its process is in this command's own network namespace")
        try:
            cgroup = (self.proc / str(runtime.pid) / "cgroup").read_text(errors="replace")
        except OSError as e:
            raise LockError(f"cannot read its process's cgroup: {e.strerror}") from None
        if container_id(cgroup) != runtime.id:
            raise LockError(f"process {runtime.pid} is no longer the container's")

    @staticmethod
    def _run(argv: list[str], fd: int, stdin: str | None = None) -> None:
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                pass_fds=(fd,),
                check=False,
            )
        except FileNotFoundError:
            raise LockError(f"{argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise LockError(f"{argv[2]} did not finish within {TIMEOUT} s") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            raise LockError(f"{argv[2]}: {lines[-1] if lines else done.returncode}")


ListRuntimes = Callable[[], Iterable[str]]  # ids of the node's running runtime containers
Inspect = Callable[[str], "dict[str, Any] | None"]


class RuntimeWatch:
    """Locks every runtime the node runs, once each, as it appears."""

    def __init__(
        self, list_runtimes: ListRuntimes, inspect: Inspect, policy: Policy, lock: NamespaceLock
    ) -> None:
        self.list_runtimes, self.inspect = list_runtimes, inspect
        self.policy, self.namespace_lock = policy, lock
        self.locked: dict[str, int] = {}  # container id -> the process locked
        self.failed: dict[str, str] = {}  # container id -> why, said once

    def sweep(self) -> int:
        """Lock the runtimes not locked yet; returns how many were locked now."""
        running = set(self.list_runtimes())
        for gone in set(self.locked) - running:
            del self.locked[gone]
        for gone in set(self.failed) - running:
            del self.failed[gone]
        count = 0
        for ident in sorted(running - set(self.locked)):
            model = self.inspect(ident)
            runtime = runtime_from_inspect(model) if model else None
            if runtime is None:
                continue  # gone or not yet running: the next sweep sees it again
            try:
                self.namespace_lock.lock(runtime, self.policy.for_runtime(runtime))
            except LockError as e:
                if self.failed.get(ident) != str(e):
                    log.error(
                        "runtime %s of %s is NOT locked down: %s", runtime.name, runtime.user, e
                    )
                self.failed[ident] = str(e)
                continue
            self.failed.pop(ident, None)
            self.locked[ident] = runtime.pid
            count += 1
            log.info("locked down runtime %s of %s", runtime.name, runtime.user)
        return count

    def run_forever(self, interval: float, sleep: Callable[[float], None] = time.sleep) -> None:
        while True:
            try:
                self.sweep()
            except OSError as e:  # the engine (or its guard) is restarting: try again
                log.warning("the engine did not answer: %s", e)
            sleep(interval)


def node_addresses(proc: Path) -> tuple[IPv4Address, ...]:
    """This node's addresses, from its /proc (this command shares the host's network)."""
    from .namespace_rules import local_addresses

    try:
        return local_addresses((proc / "net" / "fib_trie").read_text())
    except OSError:
        return ()
