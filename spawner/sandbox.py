"""The bubblewrap command line that confines one local runtime.

Inside, a runtime sees its own drive (read-write, at the same path as on the host),
the system and Python directories (read-only), a private ``/tmp``, ``/dev/shm`` and
``/proc`` (its own PID namespace), and the device nodes of its own GPUs. Nothing else
of the host is mounted: not the data directory, not other drives, not the hub's,
proxy's or quota daemon's files, sockets or environments.

When the hub runs as root, bubblewrap runs privileged (it sets up the mounts as root,
so it can bind paths such as a Python under ``/root`` that the user's account could not
reach), and the runtime's command is started under ``setpriv`` as the user's own
account with no capabilities and ``no_new_privs``. Otherwise bubblewrap makes a user
namespace, and the runtime keeps the hub's UID.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .accounts import Account

# system directories every runtime needs, read-only (a merged-/usr link is kept a link)
SYSTEM_DIRS = ("/usr", "/etc")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# NVIDIA control devices a CUDA process opens besides its GPUs' /dev/nvidiaN
NVIDIA_CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SANDBOX_HOSTNAME = "kernelhub"


class SandboxUnavailable(RuntimeError):
    """Bubblewrap cannot make a sandbox here; the message says what to install or enable."""


@dataclass(frozen=True)
class SandboxSpec:
    """What one runtime's sandbox contains."""

    drive: Path  # read-write, at the same path inside
    readonly: tuple[Path, ...] = ()  # besides the system directories
    hidden: tuple[Path, ...] = ()  # covered (a tmpfs, /dev/null) where a read-only bind has them
    devices: tuple[Path, ...] = ()  # device nodes, each at /dev/<its name>
    account: Account | None = None  # switch to it inside (the hub runs as root)
    tmp_bytes: int | None = None  # size of /tmp and /dev/shm (memory-backed)
    rlimits: dict[str, int] = field(default_factory=dict)  # prlimit option -> value
    venv_config: Path | None = None  # mounted over the virtualenv's pyvenv.cfg


def bwrap_command(spec: SandboxSpec, command: list[str], info_fd: int | None = None) -> list[str]:
    """``bwrap … -- [setpriv … --] [prlimit … --] command``."""
    argv = [find_bwrap(), "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", SANDBOX_HOSTNAME, "--new-session"]
    if spec.account is None:
        # unprivileged: a user namespace, and no capabilities in it either
        argv += ["--unshare-user", "--cap-drop", "ALL"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]  # tells the spawner the sandbox init's PID
    mounts = _Mounts()
    for directory in SYSTEM_DIRS:
        argv += mounts.read_only(Path(directory))
    for link in SYSTEM_LINKS:
        path = Path(link)
        if path.is_symlink():
            argv += ["--symlink", str(path.readlink()), link]
        elif path.is_dir():
            argv += mounts.read_only(path)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    mounts.points.update({Path("/proc"): "ro", Path("/dev"): "tmpfs"})
    size = ["--size", str(spec.tmp_bytes)] if spec.tmp_bytes else []
    for tmp in ("/tmp", "/var/tmp", "/dev/shm"):  # first: later binds may lie under /tmp
        argv += mounts.tmpfs(Path(tmp), ["--perms", "1777", *size])
    for path in sorted(set(spec.readonly), key=lambda p: len(p.parts)):
        if mounts.kind_at(path) != "ro":
            argv += mounts.read_only(path)
    if spec.venv_config is not None:
        argv += ["--ro-bind", str(spec.venv_config), str(Path(sys.prefix) / "pyvenv.cfg")]
    for path in spec.hidden:
        if mounts.kind_at(path) != "ro":
            continue  # not visible anyway
        if path.is_dir():
            argv += mounts.tmpfs(path, [])
        elif path.exists():
            argv += ["--ro-bind", "/dev/null", str(path)]
    for device in spec.devices:
        argv += ["--dev-bind", str(device), f"/dev/{device.name}"]
    argv += mounts.parents(spec.drive)
    argv += ["--bind", str(spec.drive), str(spec.drive), "--chdir", str(spec.drive)]
    argv.append("--")
    if spec.account is not None:
        argv += [_tool("setpriv"), "--reuid", str(spec.account.uid)]
        argv += ["--regid", str(spec.account.gid), "--clear-groups", "--no-new-privs"]
        argv += ["--inh-caps=-all", "--bounding-set=-all", "--"]
    if spec.rlimits:
        argv += [_tool("prlimit")]
        argv += [f"--{name}={value}:{value}" for name, value in sorted(spec.rlimits.items())]
        argv.append("--")
    return argv + command


class _Mounts:
    """The sandbox's mounts so far, to know where a new mount point's parents must be
    made (in a tmpfs, or in bubblewrap's own empty root) and where they already exist
    (inside a read-only bind of the host's tree, where nothing can be made)."""

    def __init__(self) -> None:
        self.points: dict[Path, str] = {}  # mount point -> "ro" or "tmpfs"

    def kind_at(self, path: Path) -> str:
        """The kind of the innermost mount holding ``path`` ("root": bubblewrap's own)."""
        holders = [m for m in self.points if m == path or m in path.parents]
        return self.points[max(holders, key=lambda m: len(m.parts))] if holders else "root"

    def parents(self, path: Path) -> list[str]:
        """Make the missing parents traversable (bubblewrap would copy the host's modes,
        and a 0700 ``/root`` would lock the account out of a Python below it)."""
        argv: list[str] = []
        for parent in reversed(path.parents):
            if parent == Path("/") or parent in self.points or self.kind_at(parent) == "ro":
                continue
            argv += ["--perms", "0755", "--dir", str(parent)]
        return argv

    def read_only(self, path: Path) -> list[str]:
        argv = [*self.parents(path), "--ro-bind", str(path), str(path)]
        self.points[path] = "ro"
        return argv

    def tmpfs(self, path: Path, options: list[str]) -> list[str]:
        argv = [*self.parents(path), *options, "--tmpfs", str(path)]
        self.points[path] = "tmpfs"
        return argv


def python_paths() -> tuple[Path, ...]:
    """Where this Python and its packages live: the interpreter's prefixes, every
    ``sys.path`` directory, and where editable installs' links point (a development
    checkout), each read-only inside the sandbox."""
    return _python_paths()


@cache
def _python_paths() -> tuple[Path, ...]:
    found: set[Path] = {Path(sys.base_prefix).resolve(), Path(sys.prefix)}
    found.add(Path(sys.executable).resolve().parent.parent)
    candidates = [Path(p) for p in sys.path if p] + [Path(p) for p in site.getsitepackages()]
    for entry in candidates:
        if entry.is_dir():
            found.add(entry)
            found.update(_link_targets(entry))
    share = Path(sys.prefix) / "share" / "jupyter"
    for sub in ("labextensions", "nbextensions"):
        found.update(_link_targets(share / sub, depth=2))
    return tuple(sorted(p for p in found if p.is_dir()))


def _link_targets(directory: Path, depth: int = 0) -> set[Path]:
    """Directories that symlinks in an editable install's link tree point into."""
    targets: set[Path] = set()
    if directory.name.startswith("__editable__"):
        for link in directory.rglob("*"):
            if link.is_symlink():
                targets.add(link.resolve().parent)
        return _topmost(targets)
    if depth and directory.is_dir():
        for child in directory.iterdir():
            if child.is_symlink():
                targets.add(child.resolve())
            elif child.is_dir() and depth > 1:
                targets.update(_link_targets(child, depth - 1))
    return targets


def _topmost(paths: set[Path]) -> set[Path]:
    ordered = sorted(paths, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(k == path or k in path.parents for k in kept):
            kept.append(path)
    return set(kept)


def gpu_device_nodes(gpu_ids: list[str], device_dir: Path) -> tuple[Path, ...]:
    """The device nodes of the given GPUs (indexes) plus the NVIDIA control devices
    present in ``device_dir``. A UUID cannot be mapped to its node here and is skipped:
    the GPU is then unreachable, never someone else's."""
    nodes = [device_dir / f"nvidia{gpu}" for gpu in gpu_ids if gpu.isdigit()]
    nodes += [device_dir / name for name in NVIDIA_CONTROL_DEVICES]
    return tuple(node for node in nodes if node.exists())


def find_bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "local runtimes run in a bubblewrap sandbox, and bwrap is not installed: "
            "apt-get install bubblewrap"
        )
    return found


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SandboxUnavailable(f"{name} is not installed: apt-get install util-linux")
    return found


def probe(account: Account | None) -> None:
    """Make one sandbox and run ``true`` in it, as a runtime would be run."""
    with tempfile.TemporaryDirectory(prefix="kernelhub-probe-") as drive:
        Path(drive).chmod(0o755)
        command = bwrap_command(SandboxSpec(drive=Path(drive), account=account), ["/bin/true"])
        try:
            result = subprocess.run(command, capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SandboxUnavailable(f"bubblewrap could not run: {e}") from None
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        hint = (
            "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
            "and user.max_user_namespaces > 0) or run the hub as root"
            if account is None
            else "check that the kernel allows PID and mount namespaces"
        )
        raise SandboxUnavailable(f"bubblewrap cannot make a sandbox here ({why[0]}): {hint}")
