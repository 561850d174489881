"""Warm runtimes: a user's next runtime created before they press Start.

A server's own start (importing Jupyter, about 1.1 s of CPU) is most of a cold spawn. On
a home-page visit, `prepare_warm_runtime` creates the user's next runtime container ahead
of time, through the same create path as a spawn: their drive mounted, their runtime
type's image and limits, their labels. Its launcher imports the server and waits; no code
of the user's runs in it. A Start then claims it: one HTTP request hands it the spawn's
environment (and API token) and the server starts from warm.

What keeps it safe:
- only ever for the user it was made for: it carries their labels and is found under
  their runtime's key, and a claim checks the live container's labels and name again;
- only after the spawn's own form -> validate -> quota admission, and only when the spawn
  would create exactly this container: the fingerprint (`WARM_LABEL`) of everything the
  create request sets (image id, limits, mounts, labels, environment but the per-spawn
  token and public URL) must match, so a changed runtime type, catalog or config
  discards it; its server's URLs are set at creation as the spawn will set them, since
  JupyterHub reads them (its cookies' path) when the launcher imports it;
- never a GPU: types with GPUs are never prepared, and a spawn holding GPUs never claims;
- counted against nothing: until claimed the hub lists no server for it, and the quota
  daemon accounts and judges only the hub's servers;
- activated only by the hub: the per-container secret is in its configuration, which
  only the hub reads (the socket guard shows no one else), and the runtimes' network
  refuses runtimes each other's ports;
- a refused start removes it; it is removed after `warm_runtime_idle_timeout`, when the
  hub stops, and its launcher exits by itself soon after in case the hub died.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import time
from typing import Any, ClassVar

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub.utils import fmt_ip_url, url_escape_path, url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Integer, validate

from kernelhub.contract import (
    LAUNCHER_LABEL,
    RUNTIME_OPTION,
    SERVER_LABEL,
    USER_LABEL,
    WARM_LABEL,
    WARM_PORT_ENV,
    WARM_SECRET_ENV,
    WARM_TTL_ENV,
)
from kernelhub.quotagate.gate import check_quota
from kernelhub.runtimes.types import RuntimeRequestError, RuntimeType

from .runtime import RuntimeSpawnerMixin
from .warm_registry import (
    PER_SPAWN_ENV,
    WarmRecord,
    WarmRuntimes,
    fingerprint_of,
    fingerprint_parts,
    parts_differing,
)

TTL_MARGIN_S = 60  # the launcher outlives the hub's idle timeout by this much
ACTIVATION_TIMEOUT_S = 10.0
LISTEN_WAIT_S = 5.0  # how long a just-started launcher may take to listen


class WarmRuntimeMixin(RuntimeSpawnerMixin, DockerSpawner):  # type: ignore[misc]
    """Warm runtimes for DockerSpawner-based runtime spawners (see the module)."""

    supports_warm_runtimes: ClassVar[bool] = True
    registry: ClassVar[WarmRuntimes] = WarmRuntimes()

    warm_runtimes = Bool(
        True,
        help="""Prepare each signed-in user's next runtime when they open the home page or
        the runtime form, so that Start answers in well under a second. Only for runtime
        types without GPUs and the default server; each uses about 70 MiB of memory
        until claimed or removed. False: every start is cold.""",
    ).tag(config=True)

    warm_runtimes_max = Integer(
        8,
        help="Most warm runtimes on this hub at once (1-1000); beyond it, spawns are cold.",
    ).tag(config=True)

    warm_runtime_idle_timeout = Integer(
        300,
        help="""Seconds an unclaimed warm runtime is kept (30-86400); its launcher exits by
        itself a minute later should the hub not remove it.""",
    ).tag(config=True)

    @validate("warm_runtimes_max")
    def _bounded_max(self, proposal: Any) -> int:
        value = int(proposal.value)
        if not 1 <= value <= 1000:
            raise ValueError(f"warm_runtimes_max must be between 1 and 1000, not {value}")
        return value

    @validate("warm_runtime_idle_timeout")
    def _bounded_idle(self, proposal: Any) -> int:
        value = int(proposal.value)
        if not 30 <= value <= 86400:
            raise ValueError(
                f"warm_runtime_idle_timeout must be between 30 and 86400 s, not {value}"
            )
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._create_mode: str = ""  # "", "plan" (capture the request) or "warm"
        self._warm_image_id = ""
        self._warm_secret = ""
        self._warm_fingerprint = ""
        self._warm_parts: dict[str, str] = {}

    @property
    def warm_enabled(self) -> bool:
        # the default server only; internal SSL puts per-spawn certificates in the container
        return bool(
            self.warm_runtimes
            and self.supports_warm_runtimes
            and not self.name
            and not self.internal_ssl
        )

    # --- preparing ---

    def prepare_warm_runtime(self) -> None:
        """Start making this user's warm runtime, unless one is there or not wanted."""
        key, registry = self.gpu_holder, self.registry
        if not self.warm_enabled or self.active or key in registry.ready:
            return
        if key in registry.making or registry.count() >= self.warm_runtimes_max:
            return
        task = asyncio.ensure_future(self._make_warm(key))
        registry.making[key] = task
        task.add_done_callback(lambda _: registry.making.pop(key, None))

    async def get_options_form(self) -> Any:
        # the runtime-type form: where a Start comes from, like the home page
        self.prepare_warm_runtime()
        return await super().get_options_form()

    def _warm_type(self) -> RuntimeType | None:
        """The type the user's Start would most likely ask for, if it may be warm."""
        previous = (self.user_options or {}).get(RUNTIME_OPTION)
        options = {RUNTIME_OPTION: previous or self.catalog.default_runtime}
        try:
            runtime_type = self.catalog.admit_for(self.user, self.name, options)
        except RuntimeRequestError:
            return None
        if runtime_type.gpus or runtime_type.image in self.catalog.missing_images:
            return None
        return runtime_type

    async def _make_warm(self, key: str) -> None:
        runtime_type = self._warm_type()
        if runtime_type is None:
            return
        try:
            await check_quota(self.user, self.name, runtime_type)
        except RuntimeRequestError:
            return  # a Start would be refused: nothing to prepare
        saved = self._spawn_traits()
        try:
            self.runtime_type_name, self.gpu_ids = runtime_type.name, []
            await self.apply_runtime_type(runtime_type)
            if not await self._name_is_free():
                return
            image = await self.docker("inspect_image", self.image)
            # only the image's launcher waits warm; a claim runs no post-start command
            launcher = LAUNCHER_LABEL in (image["Config"].get("Labels") or {})
            if self.cmd or self.post_start_cmd or not launcher:
                return
            self._warm_image_id = image["Id"]
            self._warm_secret = secrets.token_hex(32)
            self._create_mode = "warm"
            created = await self.create_object()
            self._create_mode = ""
            container_id = created["Id"]
            try:
                await self.docker("start", container_id)
            except docker.errors.APIError:
                await self.remove_warm(container_id, "it could not start")
                raise
            self.registry.ready[key] = WarmRecord(
                container_id,
                self._warm_fingerprint,
                self._warm_parts,
                self._warm_secret,
                time.monotonic(),
                self,
            )
            self.log.info("Warm runtime ready for %s (%s)", key, runtime_type.name)
        except Exception as e:  # a warm runtime is an optimisation: never fail a page
            self.log.warning("No warm runtime for %s: %s", key, e)
        finally:
            self._restore_spawn_traits(saved)

    async def _name_is_free(self) -> bool:
        """Whether the runtime's container name is free. A container under it (a runtime
        still stopping, or a warm one a dead hub left, whose launcher exits by itself) is
        never touched here: the next spawn deals with it as DockerSpawner does."""
        try:
            await self.docker("inspect_container", self.container_name)
        except docker.errors.NotFound:
            return True
        return False

    def _spawn_traits(self) -> dict[str, Any]:
        names = ("image", "mem_limit", "cpu_limit", "runtime_type_name", "gpu_ids", "object_id")
        saved = {name: getattr(self, name) for name in names}
        saved["extra_create_kwargs"] = self.extra_create_kwargs
        saved["extra_host_config"] = self.extra_host_config
        return saved

    def _restore_spawn_traits(self, saved: dict[str, Any]) -> None:
        self._create_mode, self._warm_secret, self._warm_fingerprint = "", "", ""
        for name, value in saved.items():
            setattr(self, name, value)

    def docker(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "create_container" and self._create_mode == "plan":
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result({"Id": "", "planned": kwargs})
            return done
        if method == "create_container" and self._create_mode == "warm":
            kwargs = self._warm_create_kwargs(kwargs)
        return super().docker(method, *args, **kwargs)

    def _warm_create_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        environment = {
            k: v for k, v in (kwargs.get("environment") or {}).items() if k not in PER_SPAWN_ENV
        }
        # the server's URLs as its spawn will set them (the server has none yet):
        # JupyterHub's HubAuth takes its cookie path from these when it is imported
        prefix = url_path_join(self.user.base_url, url_escape_path(self.name), "/")
        scheme = "https" if self.internal_ssl else "http"
        environment["JUPYTERHUB_SERVICE_PREFIX"] = prefix
        environment["JUPYTERHUB_SERVICE_URL"] = (
            f"{scheme}://{fmt_ip_url(self.ip)}:{self.port}{prefix}"
        )
        kwargs = {**kwargs, "environment": environment}
        self._warm_fingerprint = fingerprint_of(kwargs, self._warm_image_id)
        self._warm_parts = fingerprint_parts(kwargs, self._warm_image_id)
        environment[WARM_SECRET_ENV] = self._warm_secret
        environment[WARM_PORT_ENV] = str(self.port)
        environment[WARM_TTL_ENV] = str(self.warm_runtime_idle_timeout + TTL_MARGIN_S)
        labels = {**(kwargs.get("labels") or {}), WARM_LABEL: self._warm_fingerprint}
        return {**kwargs, "environment": environment, "labels": labels}

    # --- claiming ---

    async def settle_warm_runtime(self) -> None:
        """Wait for a warm runtime being made for this server: a spawn must not run
        while it sets (and then restores) this spawner's traits."""
        task = self.registry.making.get(self.gpu_holder)
        if task is not None:
            await asyncio.wait([task])

    async def run_options_from_form(self, form_data: dict[str, list[str]]) -> Any:
        # the form's Start: JupyterHub resets this spawner as the spawn begins, so a warm
        # runtime still being made for it must be finished first (else it cannot match)
        await self.settle_warm_runtime()
        options = super().run_options_from_form(form_data)
        return await options if inspect.isawaitable(options) else options

    async def discard_warm_runtime(self, why: str) -> None:
        record = self.registry.take(self.gpu_holder)
        if record is not None:
            await self.remove_warm(record.container_id, why)

    async def admit_and_take_gpus(self, user_options: Any) -> RuntimeType:
        await self.settle_warm_runtime()
        try:
            return await super().admit_and_take_gpus(user_options)
        except Exception:
            await self.discard_warm_runtime("its start was refused")
            raise

    async def start(self) -> Any:
        address = await self._claim_warm()
        if address is None:
            return await super().start()
        await self.until_answering(address)
        return address

    async def _claim_warm(self) -> tuple[str, int] | None:
        record = self.registry.take(self.gpu_holder)
        if record is None:
            return None
        try:
            if not self.warm_enabled:
                raise _Unclaimable("warm runtimes are off")
            await self._check_claim(record)
            self.object_id = record.container_id
            self.report_progress(60, "Starting your prepared runtime")
            ip, port = await self.get_ip_and_port()
            await self._activate(ip, port, record.secret)
        except (_Unclaimable, docker.errors.APIError, HTTPClientError, OSError) as e:
            self.log.info("Warm runtime for %s not used (%s): starting cold", self.gpu_holder, e)
            self.object_id = ""
            await self.remove_warm(record.container_id, "not claimable")
            return None
        self.log.info(
            "Claimed the warm runtime %s for %s", record.container_id[:12], self.gpu_holder
        )
        self.report_progress(80, "Waiting for Notebook 7 to answer")
        return ip, port

    async def _check_claim(self, record: WarmRecord) -> None:
        if self.gpu_ids:
            raise _Unclaimable("this spawn holds GPUs")
        if time.monotonic() - record.created >= self.warm_runtime_idle_timeout:
            raise _Unclaimable("it expired")
        planned, image_id = await self._planned_create()
        expected = fingerprint_of(planned, image_id)
        if record.fingerprint != expected:
            differing = parts_differing(record.parts, fingerprint_parts(planned, image_id))
            raise _Unclaimable(f"it was made with other {', '.join(differing) or 'settings'}")
        container = await self.docker("inspect_container", record.container_id)
        labels = container["Config"].get("Labels") or {}
        if (
            labels.get(WARM_LABEL) != expected
            or labels.get(USER_LABEL) != self.user.name
            or labels.get(SERVER_LABEL) != self.name
            or container["Name"].lstrip("/") != self.container_name
        ):
            raise _Unclaimable("the container is not this spawn's")
        if not container["State"].get("Running"):
            raise _Unclaimable("it is not running")

    async def _planned_create(self) -> tuple[dict[str, Any], str]:
        """The create request this spawn would send, and its image's id (nothing is
        created)."""
        self._create_mode = "plan"
        try:
            planned = (await self.create_object())["planned"]
            image_id = (await self.docker("inspect_image", self.image))["Id"]
        finally:
            self._create_mode = ""
        return planned, str(image_id)

    def report_progress(self, percent: int, message: str) -> None:
        # planning a claim or making a warm runtime creates nothing the user waits for
        if not self._create_mode:
            super().report_progress(percent, message)

    async def _activate(self, ip: str, port: int, secret: str) -> None:
        body = json.dumps({"secret": secret, "environment": self.get_env()})
        loop = asyncio.get_running_loop()
        # a Start right after its warm runtime was started can come before the launcher
        # listens (its interpreter starting): a refused connection is tried again
        deadline = loop.time() + LISTEN_WAIT_S
        while True:
            try:
                response = await AsyncHTTPClient().fetch(
                    f"http://{ip}:{port}/activate",
                    method="POST",
                    body=body,
                    headers={"Content-Type": "application/json"},
                    request_timeout=ACTIVATION_TIMEOUT_S,
                )
                break
            except ConnectionRefusedError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.05)
        if response.code != 202:
            raise _Unclaimable(f"its activation answered {response.code}")

    async def remove_warm(self, container_id: str, why: str) -> None:
        self.log.info("Removing warm runtime %s of %s: %s", container_id[:12], self.gpu_holder, why)
        try:
            await self.docker("remove_container", container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: already being removed
                self.log.warning("Could not remove warm runtime %s: %s", container_id[:12], e)

    # --- the hub's upkeep (KernelHubApp calls these on the spawner class) ---

    @classmethod
    async def reap_warm_runtimes(cls) -> None:
        await cls.registry.reap()

    @classmethod
    async def remove_warm_runtimes(cls) -> None:
        await cls.registry.remove_all()


class _Unclaimable(Exception):
    """This warm runtime must not serve this spawn (the message says why)."""
