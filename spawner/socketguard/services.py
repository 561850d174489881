"""Swarm: what a runtime's service create may say, and which services, tasks and engine
facts the hub may see (SwarmRuntimeSpawner, README: What the socket guard allows).

A service create is decoded as the engine decodes it (decode.py) and normalised
against an allow-list of Engine API ServiceSpec fields, as a container create is
(bodies.py): a field the spawner never sends is refused, and a runtime gets what a
runtime container gets: a runtime image, the runtime labels, jovyan, no capabilities,
limits, its own drive, the site snippets read-only, a private /tmp, and a port on the
node it runs on only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kernelhub.contract import DRIVE_LABEL

from .bodies import _empty, _int, _strings, _user
from .decode import ANY, MAP, Refused, check_fields, decode_body, normalise
from .policy import (
    GuardConfig,
    check_image_reference,
    drive_name,
    is_runtime_container,
    runtime_labels,
)

MOUNT = {
    "Type": ANY, "Source": ANY, "Target": ANY, "ReadOnly": ANY, "Consistency": ANY,
    "BindOptions": {"Propagation": ANY, "NonRecursive": ANY, "CreateMountpoint": ANY,
                    "ReadOnlyNonRecursive": ANY, "ReadOnlyForceRecursive": ANY},
    "VolumeOptions": {"NoCopy": ANY, "Labels": MAP, "DriverConfig": ANY, "Subpath": ANY},
    "TmpfsOptions": {"SizeBytes": ANY, "Mode": ANY, "Options": ANY},
    "ClusterOptions": ANY,
}  # fmt: skip
# switched off unless empty: each is a way out of the task's container, or into
# another's (Secrets and Configs hand it the swarm's secrets; Hosts and DNSConfig would
# let it answer for the hub; Groups could add the docker group)
MUST_BE_EMPTY = (  # noqa: SIM905 - a table of names reads better as words
    "Groups Hosts DNSConfig Secrets Configs Isolation Sysctls CapabilityAdd Ulimits"
).split()
CONTAINER_SPEC: dict[str, Any] = {name: ANY for name in MUST_BE_EMPTY} | {
    "Image": ANY, "Labels": MAP, "Command": ANY, "Args": ANY, "Hostname": ANY, "Env": ANY,
    "Dir": ANY, "User": ANY, "Init": ANY, "StopSignal": ANY, "TTY": ANY, "OpenStdin": ANY,
    "ReadOnly": ANY, "Mounts": ANY, "StopGracePeriod": ANY, "CapabilityDrop": ANY,
    "OomScoreAdj": ANY,
    "Healthcheck": {"Test": ANY, "Interval": ANY, "Timeout": ANY, "StartPeriod": ANY,
                    "Retries": ANY},
    "Privileges": {"CredentialSpec": ANY, "SELinuxContext": ANY, "Seccomp": ANY,
                   "AppArmor": ANY, "NoNewPrivileges": ANY},
}  # fmt: skip
LIMITS = {"NanoCPUs": ANY, "MemoryBytes": ANY, "Pids": ANY}
TASK_TEMPLATE: dict[str, Any] = {
    "ContainerSpec": CONTAINER_SPEC,
    "PluginSpec": ANY, "NetworkAttachmentSpec": ANY, "LogDriver": ANY, "Runtime": ANY,
    "ForceUpdate": ANY,
    "Resources": {"Limits": LIMITS,
                  "Reservations": {"NanoCPUs": ANY, "MemoryBytes": ANY, "GenericResources": ANY}},
    "RestartPolicy": {"Condition": ANY, "Delay": ANY, "MaxAttempts": ANY, "Window": ANY},
    "Placement": {"Constraints": ANY, "Preferences": ANY, "MaxReplicas": ANY, "Platforms": ANY},
    "Networks": ANY,
}  # fmt: skip
SERVICE_CREATE: dict[str, Any] = {
    "Name": ANY, "Labels": MAP, "TaskTemplate": TASK_TEMPLATE,
    "Mode": {"Replicated": {"Replicas": ANY}, "Global": ANY, "ReplicatedJob": ANY,
             "GlobalJob": ANY},
    "Networks": ANY,  # the deprecated place for TaskTemplate.Networks: must be empty
    "EndpointSpec": {"Mode": ANY, "Ports": ANY},
}  # fmt: skip
PORT = {"Name": ANY, "Protocol": ANY, "TargetPort": ANY, "PublishedPort": ANY, "PublishMode": ANY}
NETWORK = {"Target": ANY, "Aliases": ANY, "DriverOpts": MAP}
CONSTRAINT = re.compile(r"node\.hostname==[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
DOMAIN = re.compile(r"[^/]*[.:][^/]*|localhost")  # how Docker tells a registry host
USERS = {"jovyan", "1000"}


@dataclass(frozen=True)
class ServiceCreate:
    image: str  # as the service names it (with the registry)
    local_image: str  # the same image as the manager's engine names it
    user: str
    body: dict[str, Any]  # normalised: what the engine is sent


def check_service_create(config: GuardConfig, raw: bytes) -> ServiceCreate:
    """The checked ServiceSpec of a runtime; Refused for any way out of it. The image
    (local_image) still has to be checked against the engine (is_runtime_image)."""
    body = normalise(decode_body(raw), SERVICE_CREATE, "")
    name = body.get("Name")
    if not isinstance(name, str) or not name.startswith(f"{config.prefix}-"):
        raise Refused(f"a runtime service's name starts with {config.prefix}-")
    user, server = runtime_labels(body.get("Labels") or {})
    _check_fields_empty(body, ("Networks",), "")
    _check_mode(body.get("Mode") or {})
    _check_endpoint(body.get("EndpointSpec") or {})
    task = body.get("TaskTemplate") or {}
    _check_fields_empty(task, ("PluginSpec", "NetworkAttachmentSpec", "LogDriver"), "TaskTemplate.")
    check_fields(task, {"Runtime": lambda v: None if v in (None, "", "container") else
                        "must be container"})  # fmt: skip
    _check_resources(config, task.get("Resources") or {})
    condition = (task.get("RestartPolicy") or {}).get("Condition")
    if condition != "none":
        # a runtime that exits stays stopped: the hub notices, and its GPUs are freed
        raise Refused('TaskTemplate.RestartPolicy.Condition must be "none"')
    _check_placement(task.get("Placement") or {})
    _check_networks(config, task.get("Networks"))
    spec = task.get("ContainerSpec") or {}
    image = spec.get("Image")
    if not isinstance(image, str) or not image:
        raise Refused("ContainerSpec.Image must name a runtime image")
    check_image_reference(image)
    local_image = _local_image(config, image)
    spec_labels = spec.get("Labels") or {}
    if runtime_labels(spec_labels) != (user, server):
        raise Refused("ContainerSpec.Labels must carry the service's runtime labels")
    _check_container_spec(config, spec, user)
    return ServiceCreate(image, local_image, user, body)


def _check_fields_empty(data: dict[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if _empty(data.get(name)):
            raise Refused(f"{where}{name}: must be empty or absent")


def _local_image(config: GuardConfig, image: str) -> str:
    """``image`` without exactly the deployment's registry: any other registry host
    would serve the nodes an image the manager's engine never labelled."""
    registry = f"{config.image_registry}/" if config.image_registry else ""
    if registry and image.startswith(registry):
        local = image[len(registry) :]
    elif registry:
        raise Refused(f"a runtime's image comes from the registry {config.image_registry}")
    else:
        local = image
    first, slash, _ = local.partition("/")
    if slash and DOMAIN.fullmatch(first):
        raise Refused(f"image {image[:100]} names a registry the guard does not know")
    return local


def _check_mode(mode: dict[str, Any]) -> None:
    for name in ("Global", "ReplicatedJob", "GlobalJob"):
        if mode.get(name) is not None:  # {} is how these modes are asked for
            raise Refused(f"Mode.{name}: a runtime is one replicated task")
    replicas = (mode.get("Replicated") or {}).get("Replicas")
    if replicas not in (None, 1) or isinstance(replicas, bool):
        raise Refused("Mode: a runtime is one replicated task (Replicas 1)")


def _check_endpoint(endpoint: dict[str, Any]) -> None:
    if endpoint.get("Mode") not in (None, "", "vip", "dnsrr"):
        raise Refused("EndpointSpec.Mode must be vip or dnsrr")
    ports = endpoint.get("Ports")
    if ports is not None and not isinstance(ports, list):
        raise Refused("EndpointSpec.Ports must be a list")
    for item in ports or []:
        port = normalise(item, PORT, "EndpointSpec.Ports")
        if port.get("PublishMode") != "host":
            # ingress would publish the runtime on every node of the swarm
            raise Refused('EndpointSpec.Ports: PublishMode must be "host"')
        if port.get("PublishedPort") not in (None, 0):
            # the node picks a free port: no runtime takes a port another service holds
            raise Refused("EndpointSpec.Ports: PublishedPort must be 0 or absent")
        if port.get("Protocol") not in (None, "", "tcp"):
            raise Refused("EndpointSpec.Ports: Protocol must be tcp")
        if _int(1, 65535)(port.get("TargetPort")) or port.get("TargetPort") is None:
            raise Refused("EndpointSpec.Ports: TargetPort must be a port number")


def _check_resources(config: GuardConfig, resources: dict[str, Any]) -> None:
    limits = resources.get("Limits") or {}
    for name, high in (("MemoryBytes", None), ("NanoCPUs", None), ("Pids", config.max_pids)):
        if limits.get(name) is None or _int(1, high)(limits[name]):
            upto = f" up to {high}" if high else ""
            raise Refused(f"TaskTemplate.Resources.Limits.{name} must be set (1{upto})")
    reservations = resources.get("Reservations") or {}
    _check_fields_empty(reservations, ("GenericResources",), "TaskTemplate.Resources.")
    check_fields(reservations, {"NanoCPUs": _int(0), "MemoryBytes": _int(0)})


def _check_placement(placement: dict[str, Any]) -> None:
    _check_fields_empty(placement, ("Preferences", "Platforms"), "TaskTemplate.Placement.")
    constraints = placement.get("Constraints") or []
    if _strings(constraints) or isinstance(constraints, str):
        raise Refused("TaskTemplate.Placement.Constraints must be a list of strings")
    for constraint in constraints:
        if not CONSTRAINT.fullmatch(constraint):
            raise Refused("TaskTemplate.Placement.Constraints: node.hostname==NAME only")
    check_fields(placement, {"MaxReplicas": _int(0)})


def _check_networks(config: GuardConfig, networks: Any) -> None:
    if networks is None:
        return
    if not isinstance(networks, list):
        raise Refused("TaskTemplate.Networks must be a list")
    for item in networks:
        network = normalise(item, NETWORK, "TaskTemplate.Networks")
        if network.get("Target") not in config.networks:
            raise Refused(f"TaskTemplate.Networks: only {list(config.networks)}")
        # no aliases: a runtime called "hub" would receive what runtimes send the hub
        if _empty(network.get("Aliases")) or network.get("DriverOpts"):
            raise Refused("TaskTemplate.Networks: no aliases or driver options")


def _check_container_spec(config: GuardConfig, spec: dict[str, Any], user: str) -> None:
    check_fields(spec, dict.fromkeys(MUST_BE_EMPTY, _empty))
    check_fields(
        spec,
        {
            "Env": _strings, "Command": _strings, "Args": _strings,
            "Labels": lambda v: None if all(isinstance(x, str) for x in v.values()) else
            "values must be strings",
            "OomScoreAdj": _int(0, 1000), "Init": lambda v: None if v in (None, True, False)
            else "must be true or false",
        },
    )  # fmt: skip
    who = spec.get("User")
    if not isinstance(who, str) or who.split(":")[0] not in USERS or _user(who):
        raise Refused(f"ContainerSpec.User must be {' or '.join(sorted(USERS))}")
    if "ALL" not in [str(c).upper() for c in spec.get("CapabilityDrop") or []]:
        raise Refused('ContainerSpec.CapabilityDrop must include "ALL"')
    privileges = spec.get("Privileges") or {}
    if privileges.get("NoNewPrivileges") not in (None, True, False):
        raise Refused("ContainerSpec.Privileges.NoNewPrivileges must be true or false")
    if any(v not in (None, "", {}, False) for k, v in privileges.items() if k != "NoNewPrivileges"):
        # seccomp or AppArmor unconfined, an SELinux label, a credential spec
        raise Refused("ContainerSpec.Privileges: only NoNewPrivileges may be set")
    mounts = spec.get("Mounts")
    if mounts is not None and not isinstance(mounts, list):
        raise Refused("ContainerSpec.Mounts must be a list")
    for item in mounts or []:
        _check_mount(config, normalise(item, MOUNT, "ContainerSpec.Mounts"), user)


def _check_mount(config: GuardConfig, mount: dict[str, Any], user: str) -> None:
    kind, source, target = mount.get("Type"), mount.get("Source"), mount.get("Target")
    if not isinstance(target, str) or not target.startswith("/"):
        raise Refused("ContainerSpec.Mounts: Target must be an absolute path")
    if _empty(mount.get("ClusterOptions")):
        raise Refused("ContainerSpec.Mounts: no cluster volumes")
    drive = drive_name(config, user)
    if kind == "tmpfs":
        options = mount.get("TmpfsOptions") or {}
        if target != "/tmp" or source not in (None, "") or _empty(options.get("Options")):
            raise Refused("ContainerSpec.Mounts: the only tmpfs is /tmp, with no options")
        check_fields(options, {"SizeBytes": _int(0), "Mode": _int(0, 0o1777)})
    elif kind == "bind":
        shared = f"{config.drive_root}/{drive}" if config.drive_root else None
        bind = mount.get("BindOptions") or {}
        if shared is None or source != shared:
            raise Refused(
                f"ContainerSpec.Mounts: the only bind is the user's drive folder "
                f"{shared or '(none: the guard has no --drive-root)'}, not {source!r}"
            )
        if bind.get("Propagation") not in (None, "", "rprivate", "private") or any(
            bind.get(k) for k in ("CreateMountpoint", "NonRecursive")
        ):
            raise Refused("ContainerSpec.Mounts: the drive's bind is private, and made by the hub")
    elif kind in (None, "", "volume"):
        _check_volume(config, mount, drive, user)
    else:
        raise Refused(f"ContainerSpec.Mounts: no {kind} mounts")


def _check_volume(config: GuardConfig, mount: dict[str, Any], drive: str, user: str) -> None:
    source, options = mount.get("Source"), mount.get("VolumeOptions") or {}
    if options.get("DriverConfig") is not None or _empty(options.get("Subpath")):
        # a local volume's driver options can bind any folder of the node
        raise Refused("ContainerSpec.Mounts: no volume driver options or subpaths")
    if source == drive:
        if (options.get("Labels") or {}) not in ({}, {DRIVE_LABEL: user}):
            raise Refused(f"ContainerSpec.Mounts: the drive is labelled {DRIVE_LABEL}={user} only")
        return
    if source == config.site_snippets_volume and config.site_snippets_volume:
        if mount.get("ReadOnly") is not True:
            raise Refused(f"the site snippets volume {source} is mounted read-only only")
        if options.get("Labels"):
            raise Refused("ContainerSpec.Mounts: the site snippets volume takes no labels")
        return
    raise Refused(
        f"only the user's own drive {drive} and the site snippets volume may be mounted, "
        f"not {source!r}"
    )


# ---- what the hub reads -----------------------------------------------------------------

# of /info, what the hub reads (swarm detection, the node's name) and what docker-py or
# an operator's `docker info` through the guard shows harmlessly; left out: proxies
# (which may hold passwords), registry mirrors, the root directory, labels, plugins,
# security options, and Swarm.Cluster (the cluster's CA and TLS settings)
INFO_FIELDS = (
    "ID", "Name", "ServerVersion", "OperatingSystem", "OSType", "Architecture", "NCPU",
    "MemTotal", "KernelVersion",
)  # fmt: skip
SWARM_FIELDS = (
    "NodeID", "NodeAddr", "LocalNodeState", "ControlAvailable", "Error", "RemoteManagers",
    "Nodes", "Managers",
)  # fmt: skip


def info_subset(info: Any) -> dict[str, Any]:
    if not isinstance(info, dict):
        return {}
    found = info.get("Swarm")
    swarm: dict[str, Any] = found if isinstance(found, dict) else {}
    kept = {k: info[k] for k in INFO_FIELDS if k in info}
    return kept | {"Swarm": {k: swarm[k] for k in SWARM_FIELDS if k in swarm}}


def is_runtime_service(service: Any) -> bool:
    """A service the guard let through: labelled as a runtime (service and container)."""
    if not isinstance(service, dict):
        return False
    spec = service.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return is_runtime_container(spec.get("Labels")) and is_runtime_container(
        container.get("Labels")
    )


def is_runtime_task(task: Any) -> bool:
    if not isinstance(task, dict):
        return False
    container = (task.get("Spec") or {}).get("ContainerSpec") or {}
    return is_runtime_container(container.get("Labels"))


def filter_services(services: Any) -> list[Any]:
    return [s for s in services if is_runtime_service(s)] if isinstance(services, list) else []


def filter_tasks(tasks: Any) -> list[Any]:
    return [t for t in tasks if is_runtime_task(t)] if isinstance(tasks, list) else []
