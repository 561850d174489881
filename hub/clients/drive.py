"""`kernelhub drive list|delete`: the only way a user's drive is ever deleted."""

from __future__ import annotations

from pathlib import Path

import click

from kernelhub.clients.options import data_dir_option
from kernelhub.runtimes.drives import DriveError, delete_drive, docker_drives, local_drives


@click.group()
def drive() -> None:
    """Users' persistent drives (Docker volumes and local folders)."""


@drive.command("list")
@data_dir_option("The hub's data directory (for local drives).")
def list_drives(data_dir: Path) -> None:
    """List every user's drive."""
    drives = docker_drives() + local_drives(data_dir.expanduser())
    if not drives:
        click.echo("(no drives)")
    for d in drives:
        click.echo(f"{d.user:<24} {d.kind:<14} {d.location}")


@drive.command()
@click.argument("user")
@data_dir_option("The hub's data directory (for local drives).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(user: str, data_dir: Path, yes: bool) -> None:
    """Delete USER's drive(s) for good, after confirmation."""
    drives = docker_drives(user) + local_drives(data_dir.expanduser(), user)
    if not drives:
        raise click.ClickException(f"{user} has no drive")
    for d in drives:
        if not yes and not click.confirm(
            f"Delete {user}'s drive {d.location} ({d.kind}) and every file on it?", default=False
        ):
            raise click.ClickException("nothing deleted")
        try:
            delete_drive(d)
        except DriveError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"deleted {d.location}", err=True)
