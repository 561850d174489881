"""Runtimes as Docker Swarm services: dockerspawner's SwarmSpawner, driven by runtime types.

Everything DockerRuntimeSpawner guarantees holds here too (types decide image, limits
and GPUs; labels; progress; refusals; nothing left behind); what changes is where a
runtime runs:

- a runtime is a one-task service, which Swarm places on a node; the hub reaches it
  at that node's address, on a port published in host mode (no routing mesh, so a
  runtime is reachable only where it runs);
- GPUs are placed per node (``GpuInventory.nodes``): all of a runtime's GPUs on one
  node, the service pinned there, and exactly those devices handed to it. Swarm's
  generic resources do not isolate GPUs (every task on a node would see all of them
  through the NVIDIA runtime), so kernelhub does not use them;
- the drive follows the user: a folder of the filesystem every node shares
  (``drive_root``, hub.runtimes.shared_drives), or a named volume whose driver
  options (for example NFS through Docker's local driver) make the same files appear
  on whichever node runs the runtime. With neither, drives are node-local and every
  runtime runs on ``drive_node``, its GPUs taken there;
- images come from the deployment's own registry (``image_registry``), so a node that
  joins can start any runtime type without a manual ``docker load``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import docker.errors
from docker.types import DriverConfig, Mount, Resources, RestartPolicy
from dockerspawner import SwarmSpawner
from traitlets import Dict, Float, Integer, TraitError, Unicode, validate

from kernelhub.contract import DRIVE_LABEL
from kernelhub.executor import run_blocking
from kernelhub.hubapp.errors import http_refusal
from kernelhub.runtimes.gpus import NoFreeGpu
from kernelhub.runtimes.shared_drives import (
    DriveOwner,
    SharedDriveError,
    check_drive_root,
    prepare_shared_drive,
    shared_drive_path,
)
from kernelhub.runtimes.types import RuntimeType

from .docker_runtime import DRIVE_MOUNT, SITE_SNIPPETS_MOUNT, DockerRuntimeSpawner

LAUNCHER = "kernelhub-runtime"  # images/common/kernelhub-runtime, LAUNCHER_LABEL's value
TMP_SIZE = 1 << 30  # bytes of /tmp in memory, charged to the runtime's memory limit


class SwarmRuntimeSpawner(DockerRuntimeSpawner, SwarmSpawner):  # type: ignore[misc]
    """Spawn each runtime as a one-task Swarm service from its runtime type's image."""

    # a service is placed by the cluster and firewalled only once it runs: never warm
    supports_warm_runtimes = False

    drive_root = Unicode(
        "",
        help="""A folder that is the same shared filesystem on every node and on the
        hub (an NFS, CephFS or GlusterFS mount the operator made at this path on each):
        each user's drive is the folder DRIVE_ROOT/<drive name>, created by the hub
        (owned by drive_uid, mode 0700) and bind-mounted into the runtime on whichever
        node runs it. Takes precedence over drive_driver_options.""",
    ).tag(config=True)

    drive_uid = Integer(
        1000, help="The runtime user's uid (jovyan): owner of drive_root's folders."
    ).tag(config=True)

    drive_gid = Integer(1000, help="The runtime user's gid: group of drive_root's folders.").tag(
        config=True
    )

    drive_driver_options = Dict(
        help="""Docker local-driver options that make a user's drive the same on every
        node, with {username} filled in, e.g. {"type": "nfs", "o":
        "addr=10.0.0.5,rw,nfsvers=4.2", "device": ":/srv/kernelhub/drives/{username}"}.
        Empty (and no drive_root): drives are node-local and every runtime runs on
        `drive_node`.""",
    ).tag(config=True)

    drive_node = Unicode(
        "",
        help="""With node-local drives (neither drive_root nor drive_driver_options):
        the node (hostname) all runtimes run on, so each user's drive stays where it
        is; GPU runtimes take that node's GPUs. Empty: the manager the hub talks to.""",
    ).tag(config=True)

    image_registry = Unicode(
        "",
        help="""The deployment's registry (host:port) the runtime images are pushed to;
        services name their image there, so every node can pull it. Empty: images
        must already be on every node.""",
    ).tag(config=True)

    await_network_lockdown = Float(
        0,
        help="""Seconds a runtime waits, before its server starts, for the node's
        `kernelhub network lock-runtimes` to firewall it inside its own network
        namespace (Swarm's overlays bypass the host's iptables); a runtime not locked
        down by then exits and the spawn fails. 0: no wait (a cluster without that
        service: runtimes may then reach each other). docker-stack.yml sets 60. Needs
        the images' launcher (kernelhub-runtime), which does the waiting.""",
    ).tag(config=True)

    @validate("await_network_lockdown")
    def _check_await(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 3600:
            raise TraitError(f"await_network_lockdown {value:g}: expected 0-3600 seconds")
        return value

    @validate("drive_root")
    def _check_drive_root(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"])
        return check_drive_root(value) if value else ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gpu_node = ""
        self.local_drive_node = ""  # where node-local drives pin this spawn ("": shared)

    @property
    def drives_are_shared(self) -> bool:
        return bool(self.drive_root or self.drive_driver_options)

    async def admit_and_take_gpus(self, user_options: Any) -> RuntimeType:
        self.local_drive_node = ""
        if not self.drives_are_shared:
            # before the GPUs are taken: they must be the drive node's
            info = await self.docker("info")
            self.local_drive_node = self.drive_node or str(info.get("Name", ""))
        runtime_type: RuntimeType = await super().admit_and_take_gpus(user_options)
        return runtime_type

    # --- GPUs: one node's devices, the service pinned there ----------------------------
    def take_gpus(self, runtime_type: RuntimeType) -> None:
        self.release_gpus()
        if not runtime_type.gpus:
            return
        try:
            placement = self.gpu_inventory.place(
                self.gpu_holder,
                runtime_type.gpus,
                runtime_type.gpu_sharing,
                only_node=self.local_drive_node,
            )
        except NoFreeGpu as e:
            raise http_refusal(f"runtime type {runtime_type.name!r} is unavailable: {e}") from None
        self.gpu_node, self.gpu_ids = placement.node, list(placement.gpu_ids)

    def release_gpus(self) -> None:
        super().release_gpus()
        self.gpu_node = ""

    def load_state(self, state: dict[str, Any]) -> None:
        from kernelhub.runtimes.node_gpus import placement_from_state

        placement = placement_from_state(state) if state.get("gpu_node") else None
        if placement is None:
            super().load_state(state)
            return
        # the mixin would restore GPU ids without their node
        SwarmSpawner.load_state(self, state)
        self.runtime_type_name = state.get("runtime_type", "")
        self.gpu_node, self.gpu_ids = placement.node, list(placement.gpu_ids)
        sharing = (
            self.catalog.get(self.runtime_type_name).gpu_sharing
            if self.runtime_type_name in self.catalog.names
            else False
        )
        self.gpu_inventory.restore_placement(self.gpu_holder, placement, sharing)

    def get_state(self) -> dict[str, Any]:
        from kernelhub.runtimes.node_gpus import Placement, placement_state

        state = super().get_state()
        if self.gpu_node:
            state.update(placement_state(Placement(self.gpu_node, tuple(self.gpu_ids))))
        return state

    # --- the service -------------------------------------------------------------------
    async def apply_runtime_type(self, runtime_type: RuntimeType) -> None:
        await super().apply_runtime_type(runtime_type)
        if self.image_registry and not self.image.startswith(f"{self.image_registry}/"):
            self.image = f"{self.image_registry}/{self.image}"

    async def ensure_drive(self) -> None:
        """The user's folder under drive_root, made here (the hub sees the shared
        filesystem); a volume needs nothing on the manager: each node makes it from the
        mount's driver options when the task starts there."""
        if not self.drive_root:
            return
        self.report_progress(30, f"Preparing your drive {self.drive_name}")
        owner = DriveOwner(self.drive_uid, self.drive_gid)
        try:
            await run_blocking(prepare_shared_drive, self.drive_root, self.drive_name, owner)
        except SharedDriveError as e:
            self.log.error("drive of %s: %s", self.user.name, e)
            raise http_refusal(f"your drive is unavailable: {e}", 503) from None

    def drive_mount(self) -> Mount:
        if self.drive_root:
            return Mount(
                target=DRIVE_MOUNT,
                source=shared_drive_path(self.drive_root, self.drive_name),
                type="bind",
                propagation="rprivate",
            )
        options = {k: str(self._render_templates(v)) for k, v in self.drive_driver_options.items()}
        return Mount(
            target=DRIVE_MOUNT,
            source=self.drive_name,
            type="volume",
            labels={DRIVE_LABEL: self.user.name},
            driver_config=DriverConfig("local", options) if options else None,
        )

    def service_mounts(self) -> list[Mount]:
        mounts = [self.drive_mount()]
        if self.site_snippets_volume:
            mounts.append(
                Mount(target=SITE_SNIPPETS_MOUNT, source=self.site_snippets_volume, read_only=True)
            )
        mounts.append(
            Mount(target="/tmp", source="", type="tmpfs", tmpfs_size=TMP_SIZE, tmpfs_mode=0o1777)
        )
        return mounts

    def placement_constraints(self) -> list[str]:
        node = self.gpu_node or self.local_drive_node
        return [f"node.hostname=={node}"] if node else []

    async def create_object(self) -> Any:
        labels = self.runtime_labels()
        self.extra_container_spec = {
            "labels": labels,
            "mounts": self.service_mounts(),
            "cap_drop": ["ALL"],
            "user": "jovyan",
            "init": True,  # the server as PID 1 would ignore the stop signal
        }
        self.extra_placement_spec = {"constraints": self.placement_constraints()}
        self.extra_task_spec = {
            "restart_policy": RestartPolicy(condition="none"),
            "resources": self.service_resources(),
        }
        # a port of the node the task runs on; the routing mesh would publish it on all
        self.extra_endpoint_spec = {"ports": {None: (self.port, "tcp", "host")}}
        self.extra_create_kwargs = {"labels": labels}
        await self.check_pinned_node()
        await self.ensure_drive()
        self.report_progress(40, f"Creating service {self.object_name}")
        return await SwarmSpawner.create_object(self)

    async def check_pinned_node(self) -> None:
        """A runtime pinned to a node (its GPUs', or its node-local drive's) is refused at
        once when that node cannot run it: Swarm would keep the task pending until the
        start timeout, with the user watching the progress bar."""
        node = self.gpu_node or self.local_drive_node
        if not node:
            return
        nodes = await self.docker("nodes", filters={"name": node})
        found = [n for n in nodes if n.get("Description", {}).get("Hostname") == node]
        state = found[0]["Status"].get("State", "unknown") if found else "gone"
        availability = found[0]["Spec"].get("Availability", "") if found else ""
        if state != "ready" or availability != "active":
            why = availability if state == "ready" else state
            there = "its GPUs are" if self.gpu_node else "your drive is"
            raise http_refusal(
                f"your runtime must run on node {node} ({there} there), which is {why} "
                "now; try again later or ask an admin"
            )

    def service_resources(self) -> Resources:
        """The runtime type's limits and reservations, and a process limit (a fork bomb
        stops at it), which the SDK's Resources cannot say but Engine API 1.41 can."""
        resources = Resources(
            mem_limit=self.mem_limit,
            mem_reservation=self.mem_guarantee,
            cpu_limit=int(self.cpu_limit * 1e9) if self.cpu_limit else None,
            cpu_reservation=int(self.cpu_guarantee * 1e9) if self.cpu_guarantee else None,
        )
        resources.setdefault("Limits", {})["Pids"] = self.pids_limit
        return resources

    async def get_command(self) -> list[str]:
        command: list[str] = await super().get_command()
        if self.await_network_lockdown and (self.cmd or not command or command[0] != LAUNCHER):
            # any other command would start the server, and user code, unfirewalled
            raise http_refusal(
                f"runtime image {self.image} has no kernelhub launcher, which waits for the "
                "runtime's network lock-down: an administrator can rebuild it with "
                "`kernelhub images build`",
                503,
            )
        return command

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        if self.await_network_lockdown:
            env["KERNELHUB_AWAIT_LOCKDOWN"] = f"{self.await_network_lockdown:g}"
        if not self.gpu_ids:
            env.pop("NVIDIA_VISIBLE_DEVICES", None)
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        return env

    async def start_object(self) -> None:
        self.report_progress(60, f"Waiting for Swarm to run {self.object_name}")
        try:
            await SwarmSpawner.start_object(self)
        except RuntimeError as e:
            await self.remove_object()
            self.object_id = ""
            raise http_refusal(f"the runtime could not start: {e}") from None
        self.report_progress(80, "Waiting for Notebook 7 to answer")

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is not None and self.object_id:
            # its task is gone (a drained or lost node, an exit): JupyterHub stops only
            # servers that still run, so the service itself would stay behind
            with contextlib.suppress(docker.errors.NotFound):
                await self.remove_object()
            self.object_id = ""
        return status

    async def get_ip_and_port(self) -> tuple[str, int]:
        """The node running the task, and the port published there."""
        task = await self.get_task()
        if not task:
            raise RuntimeError(f"service {self.service_name} has no task")
        node = await self.docker("inspect_node", task["NodeID"])
        address = str(node["Status"].get("Addr") or "")
        if address in ("", "0.0.0.0"):  # a manager may report none: its manager address
            address = str(node.get("ManagerStatus", {}).get("Addr", "")).rsplit(":", 1)[0]
        for port in (task.get("Status", {}).get("PortStatus", {}) or {}).get("Ports", []):
            if port.get("TargetPort") == self.port:
                return address, int(port["PublishedPort"])
        raise RuntimeError(f"service {self.service_name} publishes no port {self.port}")
