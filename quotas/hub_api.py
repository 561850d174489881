"""The quota daemon's view of the hub: running servers, their activity, and stopping them.

Everything goes through JupyterHub's REST API with the service's own token
(``JUPYTERHUB_API_TOKEN``), so the daemon can do only what its role's scopes
allow: list users and servers, read activity and server state, stop servers.
Server state (``admin:server_state``) holds a local runtime's outermost process
and its start time, from which the daemon attributes that runtime's processes.
Kernel execution state comes from each server's ``/api/kernels`` through the
proxy, which needs ``access:servers``; without it the daemon falls back to the
hub's last activity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeGuard
from urllib.parse import quote

import httpx
from tornado.httpclient import AsyncHTTPClient

from kernelhub.contract import (
    LOCAL_PID_START_STATE,
    LOCAL_PID_STATE,
    RUNTIME_OPTION,
    runtime_key,
)

log = logging.getLogger(__name__)

# JupyterHub pages user lists; asking for the paginated form tells us where the next page is
PAGINATION = "application/jupyterhub-pagination+json"
PAGE_SIZE = 200


class HubApiError(RuntimeError):
    """The hub answered something the daemon cannot use (the message names the call)."""


@dataclass(frozen=True)
class ServerInfo:
    """One running (or starting/stopping) server as the hub reports it."""

    user: str
    name: str  # "" for the default server
    runtime_type: str
    started: datetime | None
    last_activity: datetime | None
    ready: bool
    pending: str | None  # "spawn", "stop" or None
    url: str  # the server's path under the public URL, e.g. /user/alice/gpu/
    groups: tuple[str, ...] = ()
    user_options: Mapping[str, Any] = field(default_factory=dict)
    # from the spawner's state (the hub shows it to tokens with admin:server_state):
    # a local runtime's outermost process, and its start time in clock ticks since boot;
    # None where absent or not a well-formed number (Docker runtimes have neither)
    local_pid: int | None = None
    local_pid_start: int | None = None
    gpu_ids: tuple[str, ...] = ()  # the GPUs the spawner assigned it (indexes or UUIDs)

    @cached_property
    def key(self) -> str:
        """``user/server``: the runtime's key in the store and in every map of the daemon."""
        return runtime_key(self.user, self.name)


@dataclass(frozen=True)
class KernelActivity:
    """What a server's kernels say: whether one is executing, and its latest activity."""

    busy: bool
    last_activity: datetime | None


class HubApi:
    """Async client of the hub's REST API (``api_url`` ends in ``/hub/api``).

    ``public_url`` (the proxy's, e.g. ``http://127.0.0.1:8000``) is where servers'
    kernel lists are read; without it kernel state is not queried.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        public_url: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self.public_url = public_url.rstrip("/") if public_url else None
        # the token lives only in this header, never in a URL or a log line
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"token {token}"}, timeout=timeout, transport=transport
        )
        self._kernels_refused = False  # log the missing scope once, not every cycle

    async def close(self) -> None:
        await self._client.aclose()

    @property
    def kernels_readable(self) -> bool:
        """False once kernel state cannot be read at all (no public URL, or refused)."""
        return self.public_url is not None and not self._kernels_refused

    async def servers(self) -> list[ServerInfo]:
        """Every server the hub counts as active (running, starting or stopping)."""
        found: list[ServerInfo] = []
        offset = 0
        while True:
            params = {"state": "active", "offset": str(offset), "limit": str(PAGE_SIZE)}
            response = await self._client.get(
                self.api_url + "users", params=params, headers={"Accept": PAGINATION}
            )
            body = self._json(response, "GET users?state=active")
            items = body["items"] if isinstance(body, dict) else body
            for user in items:
                groups = tuple(user.get("groups") or ())
                for model in (user.get("servers") or {}).values():
                    found.append(_server(user["name"], groups, model))
            following = body.get("_pagination", {}).get("next") if isinstance(body, dict) else None
            if not following:
                return found
            offset = int(following["offset"])

    async def stop_server(self, user: str, server: str) -> bool:
        """Ask the hub to stop ``user``'s ``server`` (never removes it, nor the drive).

        True once the hub has it stopping or stopped; False if it was not running.
        """
        path = f"users/{quote(user, safe='')}/server"
        if server:
            path = f"users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        response = await self._client.delete(self.api_url + path)
        if response.status_code in (202, 204):
            return True
        if response.status_code in (400, 404):  # already stopped (or never ran)
            return False
        raise HubApiError(f"DELETE {path}: HTTP {response.status_code} {response.text[:200]}")

    async def kernel_activity(self, server: ServerInfo) -> KernelActivity | None:
        """The server's kernels, or None where they cannot be read (not ready, no scope).

        The daemon's one source of kernel state (through ``KernelActivityCache``).
        """
        if not server.ready or not self.kernels_readable:
            return None
        url = f"{self.public_url}{server.url}api/kernels"
        try:
            response = await self._client.get(url, follow_redirects=False)
        except httpx.HTTPError as e:
            log.debug("kernels of %s unreadable: %s", server.key, e)
            return None
        if response.status_code in (302, 401, 403):
            self._kernels_refused = True
            log.warning(
                "kernel execution state unreadable (HTTP %d: the service lacks access:servers); "
                "idle detection uses the hub's last activity only",
                response.status_code,
            )
            return None
        if response.status_code != 200:
            return None
        try:
            kernels = response.json()
        except ValueError:
            return None
        busy = any(k.get("execution_state") == "busy" for k in kernels)
        times = [t for k in kernels if (t := _time(k.get("last_activity"))) is not None]
        return KernelActivity(busy, max(times, default=None))

    def _json(self, response: httpx.Response, call: str) -> Any:
        if response.status_code != 200:
            raise HubApiError(f"{call}: HTTP {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError as e:
            raise HubApiError(f"{call}: not JSON ({e})") from None


def _server(user: str, groups: tuple[str, ...], model: Mapping[str, Any]) -> ServerInfo:
    options = model.get("user_options") or {}
    state = model.get("state")
    if not isinstance(state, dict):
        state = {}  # a token without admin:server_state sees no state at all
    gpu_ids = state.get("gpu_ids")
    return ServerInfo(
        user=user,
        name=str(model.get("name") or ""),
        runtime_type=str(options.get(RUNTIME_OPTION) or ""),
        started=_time(model.get("started")),
        last_activity=_time(model.get("last_activity")),
        ready=bool(model.get("ready")),
        pending=model.get("pending"),
        url=str(model.get("url") or ""),
        groups=groups,
        user_options=dict(options),
        local_pid=_count(state.get(LOCAL_PID_STATE), least=1),
        local_pid_start=_count(state.get(LOCAL_PID_START_STATE), least=0),
        gpu_ids=tuple(gpu_ids) if _strings(gpu_ids) else (),
    )


def _count(value: Any, least: int) -> int | None:
    """``value`` if it is a JSON integer of at least ``least``: PIDs and clock ticks must
    match /proc exactly, so "12", 12.0 or true (an int to Python) count as absent."""
    return value if type(value) is int and value >= least else None


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    # the hub writes ISO 8601 with "Z"; fromisoformat reads "Z" from Python 3.11 on
    return datetime.fromisoformat(str(value))


class HubLookupError(Exception):
    """The hub could not be asked (down, or it refused the service's token)."""


class HubUsers:
    """Looks users up in the hub's REST API with the service's own token.

    The service needs the hub's ``read:users`` scope (``list:users`` too, for the
    admin UI of the future); the token is the ``api_token`` of its service entry.
    """

    def __init__(self, api_url: str, token: str, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    async def get(self, name: str) -> dict[str, Any] | None:
        """The hub's user model of ``name``; ``None`` when there is no such user."""
        if name in ("", ".", ".."):
            return None  # a path segment a proxy would normalise into another URL
        response = await AsyncHTTPClient().fetch(
            f"{self.api_url}/users/{quote(name, safe='')}",
            headers={"Authorization": f"token {self._token}"},
            request_timeout=self._timeout,
            raise_error=False,
        )
        if response.code == 404:
            return None
        if response.code == 599 or response.code >= 400:
            reason = response.error or response.reason
            raise HubLookupError(f"the hub answered {response.code} ({reason})")
        model = json.loads(response.body)
        # anything but this user's own model (e.g. a redirect target) means no such user
        if not isinstance(model, dict) or model.get("name") != name:
            return None
        return model

    async def exists(self, name: str) -> bool:
        return await self.get(name) is not None
