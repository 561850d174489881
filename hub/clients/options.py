"""Command-line options shared by the `kernelhub` commands: one definition each, so that
every command spells, documents and defaults them alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click

from kernelhub.clients.http import ApiClient, ApiError
from kernelhub.launcher.credentials import OPERATOR_TOKEN_FILE
from kernelhub.launcher.state import DEFAULT_DATA_DIR, HubStateError, read_hub_state

Client = TypeVar("Client", bound=ApiClient)

DEFAULT_URL = "http://127.0.0.1:8000"

url_option = click.option(
    "--url",
    envvar="KERNELHUB_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The hub's public URL (env KERNELHUB_URL).",
)
token_option = click.option(
    "--token",
    envvar=["KERNELHUB_TOKEN", "JUPYTERHUB_API_TOKEN"],
    default=None,
    help="Your hub API token (env KERNELHUB_TOKEN); get one from the hub's Token page.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def data_dir_option(help_text: str):  # type: ignore[no-untyped-def]
    """``--data-dir`` (env KERNELHUB_DATA_DIR), the hub's data directory."""
    return click.option(
        "--data-dir",
        envvar="KERNELHUB_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )


def config_file_option(help_text: str):  # type: ignore[no-untyped-def]
    """``--config`` (env KERNELHUB_CONFIG), the kernelhub_config.py to read."""
    return click.option(
        "--config",
        "config_file",
        envvar="KERNELHUB_CONFIG",
        default=None,
        type=click.Path(dir_okay=False, path_type=Path),
        help=help_text,
    )


def token_page(url: str) -> str:
    """Where a user of the hub at ``url`` creates an API token."""
    return f"{url.rstrip('/')}/hub/token"


def require_token(url: str, token: str | None) -> str:
    """The --token given, or a one-line error that says where to get one."""
    if not token:
        raise click.ClickException(
            f"no API token: pass --token or set KERNELHUB_TOKEN (create one at {token_page(url)})"
        )
    return token


@contextmanager
def one_line_errors(
    client: Client, token_refusal: Callable[[Client, ApiError], str | None]
) -> Iterator[Client]:
    """Use ``client`` in a command: its errors become one-line click errors, with
    ``token_refusal``'s text where it says the token was refused; closed after."""
    try:
        yield client
    except ApiError as e:
        raise click.ClickException(token_refusal(client, e) or e.message) from None
    finally:
        client.close()


def operator_access(data_dir: Path) -> tuple[str, str]:
    """The running hub's URL and the operator token, from its data directory (for the
    operator's commands on the hub machine); one-line errors when either is missing."""
    try:
        state = read_hub_state(data_dir)
        operator = (data_dir.expanduser() / OPERATOR_TOKEN_FILE).read_text().strip()
    except HubStateError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(
            f"cannot read the operator token in {data_dir} ({e.strerror}): start the hub "
            f"once with `kernelhub up --data-dir {data_dir}`"
        ) from None
    return str(state["url"]), operator
