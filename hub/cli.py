"""The `kernelhub` command."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from traitlets import TraitError

from kernelhub import __version__
from kernelhub.clients.options import config_file_option, data_dir_option
from kernelhub.launcher.credentials import CREDENTIALS_FILE, LocalAccount
from kernelhub.launcher.up import StartupError, UpOptions, build_config, run_hub

ENV_HELP = """\b
Environment variables (each is the same as its flag):
  KERNELHUB_DATA_DIR   --data-dir   (default ./kernelhub-data)
  KERNELHUB_CONFIG     --config     (default DATA_DIR/kernelhub_config.py if present)
  KERNELHUB_IP         --ip         (default 127.0.0.1)
  KERNELHUB_PORT       --port       (default 8000)
  KERNELHUB_DB_URL     --db-url     (default sqlite in DATA_DIR; postgresql://... works)
  KERNELHUB_LOG_LEVEL  --log-level  (default INFO)
  KERNELHUB_RUNTIMES   --runtimes   (default auto: a Docker Swarm the engine manages, else
                                    Docker when usable, else local)
  KERNELHUB_SINGLE_USER --single-user (default unset: sandboxed local runtimes, many users)
"""


# the client commands, imported only when named: `kernelhub up` runs the hub in this
# process, and the hub must not load client or image-build code it never uses
CLIENT_COMMANDS = {
    "token": "kernelhub.clients.token:token",
    "runtime": "kernelhub.clients.runtime:runtime",
    "images": "kernelhub.clients.images:images",
    "drive": "kernelhub.clients.drive:drive",
    "quota": "kernelhub.clients.quota:quota",
    "user": "kernelhub.clients.user:user",
    "network": "kernelhub.clients.network:network",
    "kubernetes": "kernelhub.runtimes.kubernetes:kubernetes",
}


class LazyGroup(click.Group):
    """A group whose CLIENT_COMMANDS load on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *CLIENT_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in CLIENT_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = CLIENT_COMMANDS[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kernelhub")
def main() -> None:
    """kernelhub: Colab-style notebooks on your own machines."""


@main.command(epilog=ENV_HELP)
@data_dir_option("Where the hub keeps its database, secrets and users' files.")
@config_file_option("kernelhub_config.py: traitlets config for kernelhub and JupyterHub.")
@click.option(
    "--ip",
    envvar="KERNELHUB_IP",
    default="127.0.0.1",
    show_default=True,
    help="Address the public proxy listens on.",
)
@click.option(
    "--port",
    envvar="KERNELHUB_PORT",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port the public proxy listens on.",
)
@click.option(
    "--db-url",
    envvar="KERNELHUB_DB_URL",
    default=None,
    help="Hub database URL (SQLite file in the data directory by default).",
)
@click.option(
    "--log-level",
    envvar="KERNELHUB_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--runtimes",
    envvar="KERNELHUB_RUNTIMES",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "local", "docker", "swarm"], case_sensitive=False),
    help="Runtime backend (auto: Swarm services when the engine manages a swarm, else "
    "Docker containers when an engine and the images are there, else local processes).",
)
@click.option(
    "--single-user",
    envvar="KERNELHUB_SINGLE_USER",
    default=None,
    metavar="NAME",
    help="Admit only NAME, and run local runtimes without a sandbox (a laptop for one).",
)
@click.pass_context
def up(
    ctx: click.Context,
    data_dir: Path,
    config_file: Path | None,
    ip: str,
    port: int,
    db_url: str | None,
    log_level: str,
    runtimes: str,
    single_user: str | None,
) -> None:
    """Start the hub, its proxy and (on Ctrl-C) stop them again."""
    explicit = {
        name
        for name in ("ip", "port")
        if ctx.get_parameter_source(name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    options = UpOptions(
        data_dir=data_dir,
        ip=ip,
        port=port,
        config_file=config_file,
        db_url=db_url,
        log_level=log_level.upper(),
        runtimes=runtimes.lower(),
        single_user=single_user,
        explicit=explicit,
    )
    try:
        config, _notes, new_passwords = build_config(options)
        _validate_kernelhub_config(config)
    except StartupError as e:
        raise click.ClickException(str(e)) from None
    _announce_sign_in(config, options.data_dir, new_passwords)
    run_hub(config)


def _validate_kernelhub_config(config: object) -> None:
    """Instantiate kernelhub's configurables once so bad values fail before start."""
    from kernelhub.runtimes.catalog import RuntimeCatalog
    from kernelhub.runtimes.gpus import GpuInventory

    try:
        RuntimeCatalog(config=config)
        GpuInventory(config=config)
    except TraitError as e:
        raise StartupError(f"invalid configuration: {e}") from None


def _announce_sign_in(config: object, data_dir: Path, account: LocalAccount | None) -> None:
    """Say where the hub is, and where the first account's password is.

    A password generated by this start is shown once, and only to a person at a
    terminal: never into a log file, a service manager's journal or container output.
    """
    url = config.JupyterHub.bind_url  # type: ignore[attr-defined]
    click.echo(f"kernelhub {__version__} starting on {url}", err=True)
    if account is None:
        return
    creds = Path(data_dir).expanduser().resolve() / CREDENTIALS_FILE
    if account.created_now and sys.stdout.isatty():
        signup = config.LocalPasswordAuthenticator.get("enable_signup", True)  # type: ignore[attr-defined]
        others = (
            f"  Others sign up at {url}hub/signup and wait for approval at "
            f"{url}hub/authorize,\n  or get a password from `kernelhub user add NAME`.\n"
        )
        click.echo(
            f"\n  Local sign-in (shown this once; kept in {creds}):\n"
            f"    user {account.user!r}, password: {account.password}\n"
            + (others if signup else "")
        )
    else:
        click.echo(f"  Local sign-in: {account.user}'s password is in {creds}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
