"""Drives on a filesystem every node shares: one folder per user under a common root.

A cluster's nodes mount the same filesystem (NFS, CephFS, GlusterFS...) at the same
path, the *drive root*; the hub sees it too. A user's drive is the folder
``ROOT/<drive name>``, which the hub creates (here) before the runtime starts and
Swarm bind-mounts on whichever node runs it, so a file written on one node is there
on every other, and a node that leaves takes no drive with it.

Isolation comes from the mounts: a runtime sees its own folder only, never the root,
so it cannot reach, rename or replace another user's folder. Drive names come from
the spawner's escaped user names (injective: two users never share a folder), and are
checked again here, since a folder name is a path.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass

# one path segment, as dockerspawner's escaping produces: no "/", no leading dot
DRIVE_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


class SharedDriveError(RuntimeError):
    """The drive folder cannot be made ready; the message says why (no secrets in it)."""


@dataclass(frozen=True)
class DriveOwner:
    """Who the runtime's user is: the folder must be theirs."""

    uid: int
    gid: int


def check_drive_root(root: str) -> str:
    """``root`` as a normalised absolute path; ValueError saying why not."""
    if not root.startswith("/"):
        raise ValueError(f"drive_root {root!r} must be an absolute path")
    if any(part in (".", "..") for part in root.split("/")):
        raise ValueError(f"drive_root {root!r} must not contain '.' or '..'")
    return os.path.normpath(root)


def shared_drive_path(root: str, name: str) -> str:
    """The folder of drive ``name`` under ``root``; SharedDriveError for a name that is
    not one plain path segment."""
    if not DRIVE_FOLDER_NAME.fullmatch(name):
        raise SharedDriveError(f"drive name {name!r} is not a plain folder name")
    return f"{check_drive_root(root)}/{name}"


def prepare_shared_drive(root: str, name: str, owner: DriveOwner) -> str:
    """Create (or check) ``root/name`` as a folder of ``owner``'s, mode 0700; its path.

    Blocking (the hub calls it through run_blocking). Symbolic links are never
    followed: the folder is opened relative to the root with O_NOFOLLOW, and its owner
    and mode are set on that descriptor. A root that is missing (not mounted on the
    hub) is an error, never created: the drive would live on the hub's disk alone.
    """
    path = shared_drive_path(root, name)
    try:
        root_fd = os.open(check_drive_root(root), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise SharedDriveError(
            f"the shared drive root {root} is not a folder on the hub ({e.strerror}): "
            "mount the cluster's shared filesystem there (README: Scaling out)"
        ) from None
    try:
        created = False
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=root_fd)
            created = True
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
        except OSError as e:
            raise SharedDriveError(f"drive folder {path} is not a folder ({e.strerror})") from None
        try:
            _give_to(fd, path, owner, created, root_fd, name)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    return path


def _give_to(fd: int, path: str, owner: DriveOwner, created: bool, root_fd: int, name: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISDIR(info.st_mode):
        raise SharedDriveError(f"drive folder {path} is not a folder")
    if (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
        try:
            os.fchown(fd, owner.uid, owner.gid)
        except PermissionError:
            # a filesystem that squashes every writer to the runtime's user (NFS
            # all_squash,anonuid=...) made it theirs already; anything else is refused
            if os.fstat(fd).st_uid != owner.uid:
                if created:
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=root_fd)
                raise SharedDriveError(
                    f"the hub (uid {os.geteuid()}) cannot give drive folder {path} to the "
                    f"runtime's user (uid {owner.uid}): run the hub as root, or export the "
                    f"shared filesystem with all_squash,anonuid={owner.uid},"
                    f"anongid={owner.gid} (README: Scaling out)"
                ) from None
    if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
        # the user's own folder, closed to every other account on every node
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, 0o700)
