"""What every kernelhub spawner shares: runtime-type choice, validation and GPUs.

Form -> validate -> apply, as kubespawner does for profiles: the form only turns
fields into ``user_options``; ``RuntimeCatalog.admit`` decides (the REST API calls
it too, before anything is created); ``apply_runtime_type`` maps the verdict onto
the backend's own traits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from jupyterhub.spawner import Spawner
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import List, Unicode, default

from kernelhub.contract import RUNTIME_OPTION, RUNTIME_TYPE_ENV, runtime_key
from kernelhub.hubapp.errors import http_refusal
from kernelhub.quotagate.gate import check_quota
from kernelhub.runtimes.catalog import RuntimeCatalog, user_group_names
from kernelhub.runtimes.gpus import GpuInventory, NoFreeGpu
from kernelhub.runtimes.types import RuntimeRequestError, RuntimeType

from .form import render_runtime_form

LIVENESS_CHECK_INTERVAL = 0.5  # seconds between "is it still running?" while it starts


class RuntimeSpawnerMixin(Spawner):
    """Runtime-type handling for any Spawner: list it first in a spawner's bases,
    e.g. ``class LocalRuntimeSpawner(RuntimeSpawnerMixin, LocalProcessSpawner)``."""

    runtime_type_name = Unicode(
        "", help="The runtime type this server runs (spawner state, not config)."
    )
    gpu_ids = List(Unicode(), help="GPUs held by this server (spawner state, not config).")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._progress_events: list[dict[str, Any]] = []

    def report_progress(self, percent: int, message: str) -> None:
        """Record a spawn step; `kernelhub runtime start` and the hub's progress page show it."""
        self._progress_events.append({"progress": percent, "message": message})

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        # JupyterHub stops iterating once the spawn finishes
        sent = 0
        while True:
            while sent < len(self._progress_events):
                yield self._progress_events[sent]
                sent += 1
            await asyncio.sleep(0.1)

    @property
    def catalog(self) -> RuntimeCatalog:
        return RuntimeCatalog.instance()

    @property
    def gpu_inventory(self) -> GpuInventory:
        return GpuInventory.instance()

    @property
    def gpu_holder(self) -> str:
        return runtime_key(self.user.name, self.name)

    @default("disable_user_config")
    def _ignore_user_config_unless_isolated_origins(self) -> bool:
        # A user's ~/.jupyter config can change how their server answers HTTP (headers,
        # CSP, extra handlers). Served from the hub's own origin, that reaches whoever
        # opens a link into the user's server; on per-user subdomains it reaches no one
        # else, so the user may keep their own config there.
        return not self.user.settings.get("subdomain_host")

    @default("options_form")
    def _runtime_options_form(self) -> Any:
        def render(spawner: Any) -> str:
            view = spawner.catalog.view(user_group_names(spawner.user))
            previous = (spawner.user_options or {}).get(RUNTIME_OPTION)
            return render_runtime_form(view, previous or spawner.catalog.default_runtime)

        return render

    @default("options_from_form")
    def _runtime_options_from_form(self) -> Any:
        def from_form(form_data: dict[str, list[str]]) -> dict[str, str]:
            values = form_data.get(RUNTIME_OPTION) or []
            if len(values) != 1 or not values[0]:
                raise http_refusal(
                    "choose one hardware accelerator: " + ", ".join(self.catalog.names)
                )
            options = {RUNTIME_OPTION: values[0]}
            self.admit(options)  # refuse on the form page, before a spawn begins
            return options

        return from_form

    @default("apply_user_options")
    def _apply_runtime_options(self) -> Any:
        async def apply(spawner: Any, user_options: dict[str, Any]) -> None:
            spawner._progress_events.clear()
            runtime_type = await spawner.admit_and_take_gpus(user_options)
            # record the type actually used (a request may leave it to the default)
            resolved = {**(user_options or {}), RUNTIME_OPTION: runtime_type.name}
            spawner.user_options = resolved
            if spawner.orm_spawner is not None:
                spawner.orm_spawner.user_options = resolved
            spawner.runtime_type_name = runtime_type.name
            gpus = f"GPU {','.join(spawner.gpu_ids)}" if spawner.gpu_ids else "no GPU"
            spawner.report_progress(10, f"Runtime type {runtime_type.display_name} ({gpus})")
            await spawner.apply_runtime_type(runtime_type)

        return apply

    async def admit_and_take_gpus(self, user_options: Any) -> RuntimeType:
        """Admit ``user_options`` and take the GPUs, atomically among this user's spawns.

        The quota check awaits the store; without the user's admission lock a
        second spawn of the same user could be counted before this one holds its
        GPUs, and both would pass ``max_gpus``. HTTP 400/403 with the reason if refused.
        """
        admissions = self.catalog.admissions
        async with admissions.lock(self.user.name):
            try:
                runtime_type = self.admit(user_options)
                try:
                    await check_quota(self.user, self.name, runtime_type)
                except RuntimeRequestError as e:
                    raise http_refusal(e.message, e.status) from None
                self.take_gpus(runtime_type)
            finally:
                # holding its GPUs (or refused), this spawn now counts as itself
                admissions.settle(self.user.name, self.name)
        return runtime_type

    def admit(self, user_options: Any) -> RuntimeType:
        """Validate ``user_options`` for this user now; HTTP 400 (403 over a limit) if refused."""
        try:
            return self.catalog.admit_for(self.user, self.name, user_options)
        except RuntimeRequestError as e:
            raise http_refusal(e.message, e.status) from None

    def take_gpus(self, runtime_type: RuntimeType) -> None:
        self.release_gpus()
        try:
            self.gpu_ids = self.gpu_inventory.assign(
                self.gpu_holder, runtime_type.gpus, runtime_type.gpu_sharing
            )
        except NoFreeGpu as e:
            raise http_refusal(f"runtime type {runtime_type.name!r} is unavailable: {e}") from None

    def release_gpus(self) -> None:
        self.gpu_inventory.release(self.gpu_holder)
        self.gpu_ids = []

    async def apply_runtime_type(self, runtime_type: RuntimeType) -> None:
        """Map the admitted runtime type onto backend traits (override per backend)."""

    def runtime_env(self) -> dict[str, str]:
        env = {RUNTIME_TYPE_ENV: self.runtime_type_name}
        if self.runtime_type_name:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
        return env

    # spawner state: survives hub restarts so GPU assignments do too
    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.runtime_type_name = state.get("runtime_type", "")
        self.gpu_ids = list(state.get("gpu_ids", []))
        if self.gpu_ids:
            sharing = False
            if self.runtime_type_name in self.catalog.names:
                sharing = self.catalog.get(self.runtime_type_name).gpu_sharing
            self.gpu_inventory.restore(self.gpu_holder, self.gpu_ids, sharing)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.runtime_type_name:
            state["runtime_type"] = self.runtime_type_name
        if self.gpu_ids:
            state["gpu_ids"] = list(self.gpu_ids)
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.release_gpus()
        self.runtime_type_name = ""

    async def start(self) -> Any:
        address = await super().start()
        await self.until_answering(address)
        return address

    async def until_answering(self, address: Any, interval: float = 0.05) -> None:
        """Return as soon as the new server answers HTTP at all.

        JupyterHub's own readiness check backs off up to 5 s between tries, so a
        server that is up may wait seconds for its next look; polling briefly here
        first makes that check pass on its first try.
        """
        base = address if isinstance(address, str) else f"http://{address[0]}:{address[1]}"
        url = f"{base.rstrip('/')}{self.server.base_url}api" if self.server else base
        client = AsyncHTTPClient()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        next_liveness_check = loop.time() + LIVENESS_CHECK_INTERVAL
        while loop.time() < deadline:
            try:
                await client.fetch(url, raise_error=False, request_timeout=2)
                return
            except (OSError, HTTPClientError):
                await asyncio.sleep(interval)
            if loop.time() >= next_liveness_check:
                # a server that died while starting fails the spawn now, not at the timeout
                next_liveness_check = loop.time() + LIVENESS_CHECK_INTERVAL
                status = await super().poll()
                if status is not None:
                    raise RuntimeError(
                        f"the runtime's server exited while starting (exit status {status})"
                    )

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is not None:
            self.release_gpus()
        return status

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            self.release_gpus()
