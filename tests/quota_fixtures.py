"""A running quota REST API, registered as a service of a real hub (pytest plugin).

Test modules load it with ``pytest_plugins = ["quota_fixtures"]``, so both quota
modules share one hub and one service. The service runs in this process (its own
thread and event loop) so tests can seed its store directly; the hub, its proxy
and HubAuth's token checks are all real.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from harness import HubProcess, free_port

from kernelhub.contract import QUOTA_SERVICE as SERVICE_NAME
from kernelhub.contract import QUOTA_SERVICE_PREFIX as SERVICE_PREFIX
from kernelhub.quotas.api import make_app
from kernelhub.quotas.store import QuotaStore

SERVICE_CONFIG = """
c.JupyterHub.services = [
    {{"name": {name!r}, "url": "http://127.0.0.1:{port}", "api_token": {token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": {name!r}, "scopes": ["list:users", "read:users"], "services": [{name!r}]}},
]
"""
# whom the service tells flagged users to contact (the daemon's --contact)
CONTACT = "the GPU team (gpu-help@example.org)"


@dataclass
class QuotaService:
    hub: HubProcess
    store: QuotaStore
    admin_token: str = field(repr=False)  # pytest shows a failing test's arguments
    contact: str = CONTACT

    @property
    def api_url(self) -> str:
        return f"{self.hub.url}{SERVICE_PREFIX}api/"

    def api(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.api(self.admin_token)


class ServiceThread:
    """Serves the quota app on loopback from a thread with its own event loop."""

    def __init__(self, store: QuotaStore, port: int, hub_api_url: str, token: str) -> None:
        from jupyterhub.services.auth import HubAuth

        self.port = port
        self.hub_auth = HubAuth(api_url=hub_api_url, api_token=token, cache_max_age=0)
        self.store = store
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = make_app(self.store, self.hub_auth, SERVICE_PREFIX, contact=CONTACT)
        server = app.listen(self.port, "127.0.0.1")
        self._ready.set()
        await self._stop.wait()
        server.stop()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the quota service did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="session")
def quota_service(
    hub_factory: Callable[..., HubProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuotaService]:
    service_port, hub_port = free_port(), free_port()
    token = secrets.token_hex(32)
    db = Path(tmp_path_factory.mktemp("quota-store")) / "quotas.sqlite"
    store = QuotaStore.open(f"sqlite:///{db}")
    # the hub's API through its proxy: what a service on another machine would use
    thread = ServiceThread(store, service_port, f"http://127.0.0.1:{hub_port}/hub/api", token)
    thread.start()
    config = SERVICE_CONFIG.format(name=SERVICE_NAME, port=service_port, token=token)
    try:
        hub = hub_factory(config, name="quotas", port=hub_port)
        yield QuotaService(hub, store, hub.token("admin"))
    finally:
        thread.stop()
        store.close()
