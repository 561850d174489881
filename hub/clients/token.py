"""`kernelhub token USER`: an operator on the hub machine issues a user an API token."""

from __future__ import annotations

from pathlib import Path

import click

from kernelhub.clients.http import HubClient, HubError
from kernelhub.clients.options import data_dir_option, operator_access


@click.command()
@click.argument("user")
@data_dir_option("The running hub's data directory.")
@click.option("--note", default="issued with kernelhub token", show_default=True)
@click.option(
    "--expires-in",
    type=click.IntRange(min=60),
    default=None,
    help="Seconds until the token expires (default: never).",
)
def token(user: str, data_dir: Path, note: str, expires_in: int | None) -> None:
    """Print a new API token for USER, creating the user if needed.

    The token carries USER's own permissions (admin scopes for admin users).
    """
    url, operator = operator_access(data_dir)
    try:
        with HubClient(url, operator) as hub:
            try:
                hub.user(user)
            except HubError as e:
                if e.status != 404:
                    raise
                hub.create_user(user)
                click.echo(f"created user {user}", err=True)
            issued = hub.new_token(user, note, expires_in)
    except HubError as e:
        raise click.ClickException(
            f"{e.message} (is `kernelhub up` running for {data_dir}?)"
        ) from None
    click.echo(issued["token"])
