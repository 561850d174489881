"""This runtime's kernel state, reported to the hub for kernelhub's quota daemon.

The quota daemon must know whether a runtime's kernels are executing: a busy kernel
is not idle, and the mining detector weighs kernel activity. It never asks a server
(that would send a privileged token to code the user controls); instead every
runtime tells the hub, with its own server token (``JUPYTERHUB_API_TOKEN``):

    POST {JUPYTERHUB_API_URL}/kernelhub/users/{user}/servers/{server}/kernels
         {"busy": <any kernel executing>, "last_activity": <newest kernel activity>}

The state is checked every ``KERNELHUB_KERNEL_REPORT_INTERVAL`` seconds (default 5,
kept within 1..60) and sent when it changed, and at least every ``HEARTBEAT`` seconds
so that the daemon can tell a silent runtime (whose reports it then ignores) from a
quiet one. A failure is logged once until reports get through again; it never
disturbs the server. Outside JupyterHub nothing is reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

if TYPE_CHECKING:
    from logging import Logger

    from jupyter_server.serverapp import ServerApp

INTERVAL_ENV = "KERNELHUB_KERNEL_REPORT_INTERVAL"
DEFAULT_INTERVAL = 5.0
MIN_INTERVAL, MAX_INTERVAL = 1.0, 60.0
# the quota daemon ignores reports older than three heartbeats (quotas/activity.py)
HEARTBEAT = 60.0
HUB_TIMEOUT_SECONDS = 10.0


def check_interval(value: str | None) -> float:
    """Seconds between two looks at the kernels: ``value`` (the environment's) within
    MIN_INTERVAL..MAX_INTERVAL, DEFAULT_INTERVAL where unset or not a number."""
    try:
        seconds = float(value) if value else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    if seconds != seconds:  # NaN
        return DEFAULT_INTERVAL
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


def report_url(api_url: str, user: str, server: str) -> str:
    """Where this server's reports go: under the hub's API, names quoted whole (the
    default server's name is empty: ``servers//kernels``)."""
    user_part, server_part = quote(user, safe=""), quote(server, safe="")
    return f"{api_url.rstrip('/')}/kernelhub/users/{user_part}/servers/{server_part}/kernels"


def kernel_state(kernel_manager: Any) -> dict[str, Any]:
    """``{"busy", "last_activity"}`` of the server's kernels (the fields ``/api/kernels``
    shows per kernel), folded into one: any busy, and the newest activity."""
    busy, newest = False, None
    for kernel_id in list(kernel_manager.list_kernel_ids()):
        try:
            kernel = kernel_manager.get_kernel(kernel_id)
        except KeyError:  # shut down meanwhile
            continue
        busy = busy or getattr(kernel, "execution_state", None) == "busy"
        last = getattr(kernel, "last_activity", None)
        if isinstance(last, datetime):
            last = last if last.tzinfo else last.replace(tzinfo=UTC)
            newest = last if newest is None or last > newest else newest
    when = newest.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if newest else None
    return {"busy": busy, "last_activity": when}


class KernelReporter:
    """Sends ``kernel_state`` to the hub on change and as a heartbeat."""

    def __init__(
        self,
        kernel_manager: Any,
        url: str,
        token: str,
        log: Logger,
        interval: float = DEFAULT_INTERVAL,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.kernel_manager = kernel_manager
        self.url = url
        self._token = token  # only ever in the Authorization header, never logged
        self.log = log
        self.interval = interval
        self.heartbeat = heartbeat
        self._sent: dict[str, Any] | None = None
        self._sent_at = 0.0
        self._failing = False

    async def run(self) -> None:
        """Check every ``interval`` until cancelled; nothing in here may end the server."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug here must not take the server down
                self._failed(f"{type(e).__name__}: {e}")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        state = kernel_state(self.kernel_manager)
        due = time.monotonic() - self._sent_at >= self.heartbeat
        if state == self._sent and not due:
            return
        try:
            await AsyncHTTPClient().fetch(
                self.url,
                method="POST",
                body=json.dumps(state),
                headers={
                    "Authorization": f"token {self._token}",
                    "Content-Type": "application/json",
                },
                request_timeout=HUB_TIMEOUT_SECONDS,
                follow_redirects=False,  # the token goes to the hub's API URL only
            )
        except HTTPClientError as e:
            self._failed(f"HTTP {e.code}")
            return
        except OSError as e:
            self._failed(str(e))
            return
        self._sent, self._sent_at = state, time.monotonic()
        if self._failing:
            self.log.info("kernelhub: kernel state reaches the hub again")
        self._failing = False

    def _failed(self, why: str) -> None:
        if not self._failing:  # once per outage, not every few seconds
            self.log.warning("kernelhub: kernel state not reported to the hub (%s)", why)
        self._failing = True


def load_kernel_reports(serverapp: ServerApp) -> KernelReporter | None:
    """Start reporting on the server's event loop; None (nothing started) outside a hub."""
    api_url = os.environ.get("JUPYTERHUB_API_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    user = os.environ.get("JUPYTERHUB_USER", "")
    if not (api_url and token and user):
        return None
    server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    reporter = KernelReporter(
        serverapp.kernel_manager,
        report_url(api_url, user, server),
        token,
        serverapp.log,
        interval=check_interval(os.environ.get(INTERVAL_ENV)),
    )
    tasks: list[asyncio.Task[None]] = []  # a reference, so the task is not collected

    def start() -> None:
        tasks.append(asyncio.ensure_future(reporter.run()))

    serverapp.io_loop.add_callback(start)  # runs once the server's loop does
    return reporter
