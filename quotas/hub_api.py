"""The quota daemon's view of the hub: running servers, their kernels, stopping them.

Everything goes through JupyterHub's REST API with the service's own token
(``JUPYTERHUB_API_TOKEN``), so the daemon can do only what its role's scopes
allow: list users and servers (``list:users``, ``read:users``, ``read:servers``),
read server state (``admin:server_state``: a local runtime's outermost process and
its start time, from which the daemon attributes that runtime's processes), and stop
servers (``delete:servers``). It cannot reach into any server (no ``access:servers``).

Kernel execution state comes from the hub as well: each runtime reports its own
kernels there with its own token (``kernelhub.hubapp.kernel_reports``), and the
daemon reads every report in one ``GET kernelhub/kernel-reports`` (``read:users``
holds the unfiltered ``read:users:activity`` it needs).

The token goes only to the hub's API: ``HubOnlyAuth`` puts it on a request whose
URL lies under ``api_url`` and refuses any other, redirects are not followed, and
every path is built from quoted names under ``api_url``. A user's server, which the
user controls, never sees it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Mapping
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


# path segments a server or proxy may resolve, climbing out of the API (also encoded)
DOT_SEGMENTS = {b".", b"..", b"%2e", b"%2e%2e", b".%2e", b"%2e."}


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


@dataclass(frozen=True)
class KernelReport:
    """A runtime's latest report of its kernels, ``age`` seconds old when read (by the
    hub's clock, so the daemon's own clock does not skew it)."""

    activity: KernelActivity
    age: float


class HubOnlyAuth(httpx.Auth):
    """The service token, on requests to the hub's API and nowhere else.

    Structural rather than careful: whatever URL a caller builds (a server's, one a
    redirect names), the token is attached only under ``api_url``; anything else is
    refused before it is sent.
    """

    def __init__(self, api_url: str, token: str) -> None:
        self._prefix = httpx.URL(api_url)
        self._header = f"token {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self.allows(request.url):
            raise HubApiError(
                f"refusing to send the hub token outside the hub API ({request.url.host})"
            )
        request.headers["Authorization"] = self._header
        yield request

    def allows(self, url: httpx.URL) -> bool:
        prefix = self._prefix
        return (
            (url.scheme, url.host, url.port) == (prefix.scheme, prefix.host, prefix.port)
            and url.raw_path.startswith(prefix.raw_path)
            and not DOT_SEGMENTS & set(url.raw_path.split(b"?")[0].lower().split(b"/"))
        )


class HubApi:
    """Async client of the hub's REST API (``api_url`` ends in ``/hub/api``)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        # the token lives only in HubOnlyAuth, never in a URL, a default header or a log
        self._client = httpx.AsyncClient(
            auth=HubOnlyAuth(self.api_url, token),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        self._reports_refused = False  # log a refused read once, not every cycle

    async def close(self) -> None:
        await self._client.aclose()

    def url(self, *segments: str) -> str:
        """``api_url`` + the segments, each quoted whole: a name with ``/`` or ``..``
        in it stays one segment under the API."""
        return self.api_url + "/".join(_segment(s) for s in segments)

    async def servers(self) -> list[ServerInfo]:
        """Every server the hub counts as active (running, starting or stopping)."""
        found: list[ServerInfo] = []
        offset = 0
        while True:
            params = {"state": "active", "offset": str(offset), "limit": str(PAGE_SIZE)}
            response = await self._client.get(
                self.url("users"), params=params, headers={"Accept": PAGINATION}
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
        segments = ("users", user, "servers", server) if server else ("users", user, "server")
        response = await self._client.delete(self.url(*segments))
        if response.status_code in (202, 204):
            return True
        if response.status_code in (400, 404):  # already stopped (or never ran)
            return False
        path = "/".join(segments)
        raise HubApiError(f"DELETE {path}: HTTP {response.status_code} {response.text[:200]}")

    async def kernel_reports(self) -> dict[str, KernelReport]:
        """Every running runtime's latest kernel report, by ``user/server`` key.

        Empty where the hub cannot tell (unreachable, refused, an older hub): the daemon
        then judges by the hub's last activity alone. One call for all runtimes, so one
        runtime can never switch kernel state off for the others.
        """
        try:
            response = await self._client.get(self.url("kernelhub", "kernel-reports"))
        except httpx.HTTPError as e:
            log.warning("kernel reports unreadable this cycle: %s", e)
            return {}
        if response.status_code in (401, 403, 404):
            if not self._reports_refused:
                log.warning(
                    "kernel reports unreadable (HTTP %d: the service needs read:users:activity "
                    "on every user); idle detection uses the hub's last activity only",
                    response.status_code,
                )
            self._reports_refused = True
            return {}
        try:
            body = self._json(response, "GET kernelhub/kernel-reports")
            return _reports(body)
        except (HubApiError, KeyError, TypeError, ValueError) as e:
            log.warning("kernel reports unusable this cycle: %s", e)
            return {}

    def _json(self, response: httpx.Response, call: str) -> Any:
        if response.status_code != 200:
            raise HubApiError(f"{call}: HTTP {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError as e:
            raise HubApiError(f"{call}: not JSON ({e})") from None


def _segment(name: str) -> str:
    quoted = quote(name, safe="")
    if quoted.encode().lower() in DOT_SEGMENTS:  # "." and ".." survive quoting
        raise HubApiError(f"no hub API path has a segment {name!r}")
    return quoted


def _reports(body: Any) -> dict[str, KernelReport]:
    now = _time(body["now"])
    if now is None:
        raise ValueError("no hub time")
    found: dict[str, KernelReport] = {}
    for item in body["reports"]:
        reported = _time(item["reported"])
        if reported is None or not isinstance(item["busy"], bool):
            raise ValueError(f"malformed report {item!r:.100}")
        activity = KernelActivity(item["busy"], _time(item["last_activity"]))
        age = max(0.0, (now - reported).total_seconds())
        found[runtime_key(str(item["user"]), str(item["server"]))] = KernelReport(activity, age)
    return found


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
