"""Small host-side helpers of the local spawner: /proc reads, the sandbox's info pipe,
handing a drive to an account, and the Python environment's user-site switch."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import sys
import time
from pathlib import Path

from .accounts import Account

INFO_TIMEOUT = 30.0  # seconds bubblewrap has to report its sandbox's init PID


def read_sandbox_info(fd: int, timeout: float = INFO_TIMEOUT) -> int:
    """The sandbox init's PID from bubblewrap's ``--info-fd`` JSON; 0 if none came.

    Closes ``fd``. Reads only until one JSON object is complete: the write end may stay
    open in the sandbox's processes, so end-of-file cannot be waited for.
    """
    buffer = b""
    decoder = json.JSONDecoder()
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            with contextlib.suppress(ValueError):
                info, _ = decoder.raw_decode(buffer.decode().lstrip())
                pid = info.get("child-pid") if isinstance(info, dict) else None
                return pid if isinstance(pid, int) and pid > 0 else 0
        return 0
    finally:
        os.close(fd)


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks since boot); 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    fields = raw.rpartition(b")")[2].split()
    return int(fields[19]) if len(fields) > 19 else 0


def alive(pid: int, command: str = "bwrap") -> bool:
    """Whether ``pid`` is still a process running ``command`` (not a reused PID)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == command
    except OSError:
        return False


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything under it to ``uid:gid`` (symlinks themselves, never
    what they point to)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def setpriv_prefix(account: Account) -> list[str]:
    """Run as ``account``, with no supplementary groups, capabilities or new privileges."""
    setpriv = shutil.which("setpriv") or "setpriv"
    return [
        setpriv,
        "--reuid",
        str(account.uid),
        "--regid",
        str(account.gid),
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


def user_site_venv_config(directory: Path) -> Path | None:
    """A copy of this virtualenv's ``pyvenv.cfg`` that lets user site-packages in.

    Mounted over the original inside sandboxes, so ``pip install --user`` installs into
    the user's drive (``~/.local``) while the shared environment stays read-only.
    None outside a virtualenv, where user site-packages are on already.
    """
    original = Path(sys.prefix) / "pyvenv.cfg"
    if sys.prefix == sys.base_prefix or not original.exists():
        return None
    lines = [
        line
        for line in original.read_text().splitlines()
        if not line.replace(" ", "").lower().startswith("include-system-site-packages=")
    ]
    lines.append("include-system-site-packages = true")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / "pyvenv.cfg"
    text = "\n".join(lines) + "\n"
    if not target.exists() or target.read_text() != text:
        temporary = directory / "pyvenv.cfg.tmp"
        temporary.write_text(text)
        temporary.chmod(0o644)
        os.replace(temporary, target)
    return target
