"""What isolation local runtimes get on this host, checked before the hub starts and
said in its start-up log: the sandbox, whose account runs the code, which limits hold."""

from __future__ import annotations

import os
import pwd
from typing import TYPE_CHECKING

from .accounts import Account
from .sandbox import SandboxUnavailable, probe

if TYPE_CHECKING:
    from .local import LocalRuntimeSpawner


def sandbox_unavailable() -> str | None:
    """Why no sandbox can be made here, or None when one can (a real one is made)."""
    account = None
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            return "the 'nobody' account, used to try the sandbox, does not exist"
        account = Account("nobody", nobody.pw_uid, nobody.pw_gid)
    try:
        probe(account)
    except SandboxUnavailable as e:
        return str(e)
    return None


def describe_isolation(spawner: LocalRuntimeSpawner) -> str:
    if os.geteuid() == 0:
        who = f"each user's code under a Unix account of its own ({spawner.account_prefix}*)"
    else:
        who = "every user's code under the hub's own UID, in a user namespace"
    sandbox = f"isolation: bubblewrap sandboxes (own mount, PID, IPC and UTS namespaces), {who}"
    tree = spawner.cgroup_tree()
    if tree is not None:
        return f"{sandbox}; limits enforced by cgroup {tree.version}: memory, CPU, processes"
    per = "per account" if os.geteuid() == 0 else "per UID, shared by all runtimes"
    return (
        f"{sandbox}; limits enforced by rlimits: memory (address space of each process), "
        f"processes ({per}); NOT enforced: CPU (no writable cgroups)"
    )
