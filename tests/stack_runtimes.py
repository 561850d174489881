"""Runtimes spawned through a deployed hub's REST API, as its users would: each user
gets a token the way an operator issues one (`kernelhub token` in the hub's container),
starts a server, and reaches it through the hub's proxy. For the stack deployment's
tests (tests/deployment/test_stack_swarm.py); everything the users had is removed again,
also when a test fails."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import httpx
from harness import stop_all_runtimes, wait_ready, wait_until

from kernelhub.contract import DRIVE_LABEL, USER_LABEL

SNIPPETS_VOLUME = "kernelhub-site-snippets"  # every runtime mounts it, read-only
# Python that connects to each (host, port) of ADDRESSES and prints, per line, "open" or
# the error's name (refused, unreachable, timeout)
PROBE = """import socket
for host, port in ADDRESSES:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print("open")
    except OSError as e:
        print(type(e).__name__)
"""


@dataclass
class Spawned:
    """Users with a running runtime each; each client holds its user's token (never in
    a repr: pytest shows a failing test's arguments)."""

    engine: Any
    url: str  # the hub's published port
    users: list[str]
    apis: dict[str, httpx.Client] = field(repr=False)

    def runtime_url(self, user: str, path: str) -> str:
        """``path`` of ``user``'s runtime, through the hub's proxy."""
        return f"{self.url}/user/{user}/{path}"

    def token(self, user: str) -> str:
        return str(self.apis[user].headers["Authorization"]).removeprefix("token ")

    def address(self, user: str, network: str) -> str:
        """``user``'s runtime's address on ``network`` (its task's container's)."""
        (container,) = self.engine.containers.list(filters={"label": f"{USER_LABEL}={user}"})
        return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])

    def left(self, *users: str) -> list[str]:
        """The engine's runtime services and containers of ``users`` (none named: all)."""
        found: list[str] = []
        for user in users or self.users:
            label = {"label": f"{USER_LABEL}={user}"}
            found += [s.name for s in self.engine.services.list(filters=label)]
            found += [c.name for c in self.engine.containers.list(all=True, filters=label)]
        return found


def hub_api(url: str, hub: Any, user: str) -> httpx.Client:
    """A client of the hub's REST API with a new token of ``user`` (created if needed)
    from ``hub``, the hub's container."""
    command = ["kernelhub", "token", user, "--data-dir", "/srv/kernelhub"]
    code, (out, err) = hub.exec_run(command, demux=True)
    assert code == 0, (err or b"").decode(errors="replace")[-2000:]
    auth = {"Authorization": f"token {out.decode().strip()}"}
    return httpx.Client(base_url=f"{url}/hub/api/", timeout=30, headers=auth)


@contextmanager
def spawned_runtimes(
    engine: Any, url: str, hub: Any, count: int = 2, runtime: str = "cpu"
) -> Iterator[Spawned]:
    """``count`` new users, each with a ``runtime`` started through the REST API (asked
    for at once, so that the spawns overlap) and ready."""
    users = [f"stk{secrets.token_hex(3)}{chr(ord('a') + n)}" for n in range(count)]
    run = Spawned(engine, url, users, {user: hub_api(url, hub, user) for user in users})
    had_snippets = SNIPPETS_VOLUME in [v.name for v in engine.volumes.list()]
    try:
        for user, api in run.apis.items():
            started = api.post(f"users/{user}/server", json={"user_options": {"runtime": runtime}})
            assert started.status_code in (201, 202), started.text
        for user, api in run.apis.items():
            wait_ready(api, user)
        yield run
    finally:
        _remove(run, had_snippets)


def _remove(run: Spawned, had_snippets: bool) -> None:
    """What the hub left behind (the tests say whether it did) and the users' drives.
    Before `docker stack rm`: a runtime service would keep the runtimes network."""
    for user, api in run.apis.items():
        with suppress(httpx.HTTPError, TimeoutError):
            stop_all_runtimes(api, user)
        api.close()
        for service in run.engine.services.list(filters={"label": f"{USER_LABEL}={user}"}):
            service.remove()
    wait_until(lambda: not run.left(), timeout=60, interval=1, what="the runtimes to go")
    for volume in run.engine.volumes.list(filters={"label": DRIVE_LABEL}):
        if volume.attrs["Labels"][DRIVE_LABEL] in run.users:
            volume.remove(force=True)
    if not had_snippets:  # made empty by the runtimes' mount
        with suppress(docker.errors.NotFound):
            run.engine.volumes.get(SNIPPETS_VOLUME).remove(force=True)
