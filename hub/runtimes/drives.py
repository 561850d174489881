"""Users' persistent drives: Docker volumes labelled by kernelhub, and local folders.

Nothing in the service deletes a drive; only `kernelhub drive delete` does, after
asking. Docker is reached through its SDK only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from kernelhub.contract import DRIVE_LABEL


@dataclass(frozen=True)
class Drive:
    user: str
    kind: str  # "docker-volume" or "local-folder"
    location: str


class DriveError(Exception):
    """A drive operation was refused; the message says why."""


def docker_drives(user: str | None = None) -> list[Drive]:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
        label = f"{DRIVE_LABEL}={user}" if user else DRIVE_LABEL
        volumes = client.volumes.list(filters={"label": label})
    except docker.errors.DockerException:
        return []
    return [Drive(v.attrs["Labels"][DRIVE_LABEL], "docker-volume", v.name) for v in volumes]


def local_drives(data_dir: Path, user: str | None = None) -> list[Drive]:
    users = data_dir / "users"
    if not users.is_dir():
        return []
    folders = [users / user] if user else sorted(p for p in users.iterdir() if p.is_dir())
    return [Drive(p.name, "local-folder", str(p)) for p in folders if p.is_dir()]


def delete_drive(drive: Drive) -> None:
    if drive.kind == "local-folder":
        shutil.rmtree(drive.location)
        return
    import docker
    import docker.errors

    client = docker.from_env(timeout=10)
    users_of_volume = client.containers.list(all=True, filters={"volume": drive.location})
    if users_of_volume:
        names = ", ".join(c.name for c in users_of_volume)
        raise DriveError(f"drive {drive.location} is in use by {names}: stop those runtimes first")
    try:
        client.volumes.get(drive.location).remove()
    except docker.errors.APIError as e:
        raise DriveError(f"could not delete {drive.location}: {e.explanation}") from None
