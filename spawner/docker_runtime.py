"""Runtimes as Docker containers: DockerSpawner, driven by runtime types.

DockerSpawner does the container work. This class adds four things to it:
- the runtime type decides the image, limits and GPUs, and nothing a user
  sends can name another image (the class of bug behind CVE-2023-48311);
- GPUs are assigned exclusively, through `device_requests` with `device_ids`;
- every user has a persistent drive (a named volume) while containers are
  disposable;
- Docker calls go through kernelhub's shared pool, where stock DockerSpawner
  uses a single thread that makes concurrent spawns queue.
Its base, WarmRuntimeMixin (warm_runtime.py), can prepare a user's next runtime ahead.
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
from docker.types import DeviceRequest
from traitlets import CaselessStrEnum, Integer, Unicode, default, validate

from kernelhub.contract import (
    CPU_LIMIT_LABEL,
    DRIVE_LABEL,
    GPUS_LABEL,
    LAUNCHER_LABEL,
    RUNTIME_TYPE_LABEL,
    SERVER_LABEL,
    USER_LABEL,
)
from kernelhub.executor import blocking_pool
from kernelhub.hubapp.errors import http_refusal
from kernelhub.runtimes.types import RuntimeType

from .warm_runtime import WarmRuntimeMixin

DRIVE_MOUNT = "/home/jovyan"
SITE_SNIPPETS_MOUNT = "/etc/kernelhub/snippets"  # kernelhub-snippets' default site folder
NO_NEW_PRIVILEGES = "no-new-privileges"
PRIVATE_TMP = "rw,nosuid,nodev"


class DockerRuntimeSpawner(WarmRuntimeMixin):  # a RuntimeSpawnerMixin and DockerSpawner
    """Spawn each runtime as a container from its runtime type's image."""

    uses_images = True  # the hub watches which runtime images exist

    drive_name_template = Unicode(
        "kernelhub-drive-{username}",
        help="""Name of each user's persistent drive (a Docker volume), mounted at
        /home/jovyan in every runtime of that user. kernelhub never deletes it.""",
    ).tag(config=True)

    site_snippets_volume = Unicode(
        "kernelhub-site-snippets",
        help="""A Docker volume of site-wide code snippets that the hub admin manages,
        mounted read-only at /etc/kernelhub/snippets in every runtime, where the
        notebook's snippet library reads them. Docker creates it, empty, if it does
        not exist. Empty: none.""",
    ).tag(config=True)

    gpu_request_mode = CaselessStrEnum(
        ["device-requests", "env"],
        default_value="device-requests",
        help="""How a container gets its GPUs. "device-requests" (default) asks the
        engine for exactly the assigned devices (NVIDIA container toolkit).
        "env" only sets NVIDIA_VISIBLE_DEVICES, for engines whose default runtime
        is nvidia.""",
    ).tag(config=True)

    pids_limit = Integer(
        1024,
        help="""Most processes (and threads) one runtime container may have at once, so a
        fork bomb stops at its own container. Between 64 and 1048576.""",
    ).tag(config=True)

    @validate("pids_limit")
    def _bounded_pids_limit(self, proposal: Any) -> int:
        value = int(proposal.value)
        if not 64 <= value <= 1_048_576:
            raise ValueError(f"pids_limit must be between 64 and 1048576, not {value}")
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the operator's own settings; each spawn merges its runtime's on top
        self._configured_create_kwargs: Any = self.extra_create_kwargs  # type: ignore[has-type]
        self._configured_host_config: Any = self.extra_host_config  # type: ignore[has-type]

    @property
    def executor(self) -> ThreadPoolExecutor:
        return blocking_pool()

    @default("prefix")
    def _kernelhub_prefix(self) -> str:
        return "kernelhub"

    @default("remove")
    def _disposable_containers(self) -> bool:
        return True

    @default("allowed_images")
    def _no_user_chosen_images(self) -> list[str]:
        # images come from runtime types alone; user_options cannot name one
        return []

    @default("pull_policy")
    def _never_pull(self) -> str:
        # runtime images are built locally (kernelhub images build); sites without
        # a registry must never wait on a pull
        return "never"

    @default("notebook_dir")
    def _drive_is_notebook_dir(self) -> str:
        return DRIVE_MOUNT

    @default("volumes")
    def _drive_and_site_snippets(self) -> dict[str, Any]:
        volumes: dict[str, Any] = {self.drive_name_template: DRIVE_MOUNT}
        if self.site_snippets_volume:
            volumes[self.site_snippets_volume] = {"bind": SITE_SNIPPETS_MOUNT, "mode": "ro"}
        return volumes

    async def apply_runtime_type(self, runtime_type: RuntimeType) -> None:
        if not runtime_type.image:
            raise http_refusal(f"runtime type {runtime_type.name!r} names no image")
        self.image = runtime_type.image
        self.mem_limit = runtime_type.mem_limit
        self.cpu_limit = runtime_type.cpu_limit

    def runtime_labels(self) -> dict[str, str]:
        return {
            USER_LABEL: self.user.name,
            SERVER_LABEL: self.name,
            RUNTIME_TYPE_LABEL: self.runtime_type_name,
            GPUS_LABEL: ",".join(self.gpu_ids),
            # cores it may use: the quota daemon judges "full CPU" against it
            CPU_LIMIT_LABEL: f"{self.cpu_limit:g}" if self.cpu_limit else "",
        }

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        env.update(self.runtime_env())
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids) or "void"
        # the NVIDIA runtime shows a container its own GPUs only, numbered from 0 whatever
        # their host indexes: CUDA_VISIBLE_DEVICES=<host index> would hide a runtime's
        # GPU from it (given host GPU 1, it would look for a second one)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(self.gpu_ids)))
        return env

    async def create_object(self) -> Any:
        # per-spawn settings merged over whatever the operator configured
        configured_create = await self._resolved(self._configured_create_kwargs)
        configured_host = await self._resolved(self._configured_host_config)
        labels = {**configured_create.get("labels", {}), **self.runtime_labels()}
        self.extra_create_kwargs = {**configured_create, "labels": labels}
        host_config = {**configured_host, **self.locked_down_host_config(configured_host)}
        if self.gpu_ids and self.gpu_request_mode == "device-requests":
            host_config["device_requests"] = [
                DeviceRequest(
                    driver="nvidia", device_ids=list(self.gpu_ids), capabilities=[["gpu"]]
                )
            ]
        self.extra_host_config = host_config
        await self.ensure_drive()
        self.report_progress(40, f"Creating container {self.object_name}")
        return await super().create_object()

    def locked_down_host_config(self, configured: dict[str, Any]) -> dict[str, Any]:
        """What every runtime container gets whatever the operator configured: no
        capabilities (the images run as jovyan and need none), no privilege gained through
        setuid files, a process limit, and a /tmp of its own in memory (charged to the
        container's memory limit). The socket guard refuses a container without them."""
        security = [o for o in configured.get("security_opt") or [] if o != NO_NEW_PRIVILEGES]
        return {
            "cap_drop": ["ALL"],
            "cap_add": [],
            "security_opt": [NO_NEW_PRIVILEGES, *security],
            "pids_limit": self.pids_limit,
            "tmpfs": {**(configured.get("tmpfs") or {}), "/tmp": PRIVATE_TMP},
        }

    @property
    def drive_name(self) -> str:
        return str(self._render_templates(self.drive_name_template))

    async def ensure_drive(self) -> None:
        """Create the user's drive volume (labelled, so admin commands can find it)."""
        name = self.drive_name
        try:
            await self.docker("inspect_volume", name)
        except docker.errors.NotFound:
            self.report_progress(30, f"Creating your drive {name}")
            await self.docker("create_volume", name, labels={DRIVE_LABEL: self.user.name})

    async def _resolved(self, setting: Any) -> dict[str, Any]:
        value = self._eval_if_callable(setting)
        if inspect.isawaitable(value):
            value = await value
        return dict(value or {})

    async def get_command(self) -> list[str]:
        """The image's launcher (its LAUNCHER_LABEL: images/common/kernelhub-runtime,
        the same server, a second faster to start) in place of its CMD, unless the
        operator configured `cmd`."""
        if self.cmd:
            return list(await super().get_command())
        config = (await self.docker("inspect_image", self.image))["Config"]
        launcher = (config.get("Labels") or {}).get(LAUNCHER_LABEL)
        command = [launcher] if launcher else list(config["Cmd"] or [])
        return command + list(self.get_args())

    async def pull_image(self, image: str) -> None:
        self.report_progress(20, f"Checking image {image}")
        try:
            await super().pull_image(image)
        except docker.errors.ImageNotFound:
            raise http_refusal(
                f"runtime image {image} is not on this host; an administrator can build it "
                "with `kernelhub images build`",
                status=503,
            ) from None

    async def start_object(self) -> None:
        self.report_progress(60, f"Starting container {self.object_name}")
        try:
            await super().start_object()
        except docker.errors.APIError as e:
            # a container that cannot start must not linger (nor hold its GPUs)
            await self.remove_object()
            self.object_id = ""
            raise http_refusal(f"the runtime container could not start: {e.explanation}") from None
        self.report_progress(80, "Waiting for Notebook 7 to answer")
