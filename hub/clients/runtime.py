"""`kernelhub runtime list|start|stop|status`: runtimes from a terminal, with a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from kernelhub.clients.http import ApiError, HubClient, HubError
from kernelhub.clients.options import (
    json_option,
    one_line_errors,
    require_token,
    token_option,
    token_page,
    url_option,
)

name_option = click.option(
    "--name",
    default="",
    help="Runtime (named server) name; empty for your default runtime.",
)


@contextmanager
def hub_client(url: str, token: str | None) -> Iterator[HubClient]:
    def token_refusal(hub: HubClient, e: ApiError) -> str | None:
        # a 403 before the hub has accepted the token once is the token's, not the request's
        if e.status != 403 or hub.identified:
            return None
        return (
            f"the hub refused this API token ({e.message}); it may be mistyped, expired "
            f"or revoked: create a new one at {token_page(url)}"
        )

    client = HubClient(url, require_token(url, token))
    with one_line_errors(client, token_refusal) as session:
        yield session


@click.group()
def runtime() -> None:
    """List, start, stop and inspect your runtimes."""


@runtime.command("list")
@url_option
@token_option
@json_option
def list_runtimes(url: str, token: str | None, as_json: bool) -> None:
    """Runtime types you can start, and your runtimes."""
    with hub_client(url, token) as hub:
        types = hub.runtime_types()
        me = hub.user(hub.whoami()["name"])
    servers = me.get("servers", {})
    if as_json:
        click.echo(
            json.dumps({"runtime_types": types["runtime_types"], "runtimes": servers}, indent=2)
        )
        return
    click.echo("RUNTIME TYPES")
    for t in types["runtime_types"]:
        state = "available" if t["available"] else f"unavailable: {t['reason']}"
        click.echo(f"  {t['name']:<10} {t['display_name']:<16} {state}")
    click.echo("YOUR RUNTIMES")
    if not servers:
        click.echo("  (none running)")
    for name, server in servers.items():
        click.echo(f"  {name or '(default)':<16} {_describe(server)}")


@runtime.command()
@url_option
@token_option
@click.option("--type", "runtime_type", default=None, help="Runtime type, e.g. cpu or gpu.")
@name_option
@json_option
def start(url: str, token: str | None, runtime_type: str | None, name: str, as_json: bool) -> None:
    """Start a runtime, show its progress, then print its URL."""
    options = {"runtime": runtime_type} if runtime_type else {}
    with hub_client(url, token) as hub:
        user = hub.whoami()["name"]
        hub.start_server(user, name, options)
        ready = False
        for event in hub.progress(user, name):
            if not as_json:
                click.echo(f"[{event.get('progress', 0):>3}%] {event.get('message', '')}", err=True)
            if event.get("failed"):
                raise HubError(f"runtime failed to start: {event.get('message', '')}")
            ready = ready or bool(event.get("ready"))
        server = hub.user(user).get("servers", {}).get(name)
    if not ready or not server or not server.get("ready"):
        raise click.ClickException(
            "the runtime did not become ready; see `kernelhub runtime status`"
        )
    full_url = f"{url.rstrip('/')}{server['url']}"
    if as_json:
        click.echo(json.dumps({**server, "full_url": full_url}, indent=2))
    else:
        click.echo(full_url)


@runtime.command()
@url_option
@token_option
@name_option
def stop(url: str, token: str | None, name: str) -> None:
    """Stop a runtime (its files stay on your drive)."""
    with hub_client(url, token) as hub:
        user = hub.whoami()["name"]
        if name not in hub.user(user).get("servers", {}):
            raise click.ClickException(f"no running runtime named {name or '(default)'!r}")
        hub.stop_server(user, name)
    click.echo(f"stopping {name or '(default)'}", err=True)


@runtime.command()
@url_option
@token_option
@name_option
@json_option
def status(url: str, token: str | None, name: str, as_json: bool) -> None:
    """Show one runtime's state."""
    with hub_client(url, token) as hub:
        user = hub.whoami()["name"]
        server = hub.user(user).get("servers", {}).get(name)
    if as_json:
        model = server or {"name": name, "ready": False, "pending": None, "url": None}
        if server:
            model = {**server, "full_url": f"{url.rstrip('/')}{server['url']}"}
        click.echo(json.dumps(model, indent=2))
    elif server is None:
        click.echo(f"{name or '(default)'}: not running")
    else:
        click.echo(f"{name or '(default)'}: {_describe(server)} {url.rstrip('/')}{server['url']}")


def _describe(server: dict[str, Any]) -> str:
    runtime_type = (server.get("user_options") or {}).get("runtime", "?")
    if server.get("pending"):
        return f"[{runtime_type}] {server['pending']} pending"
    return f"[{runtime_type}] {'ready' if server.get('ready') else 'not ready'}"
