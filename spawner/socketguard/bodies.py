"""The two bodies the guard lets through: a runtime container's create, a drive's create.

Each body is decoded as the engine decodes it (decode.py) and normalised against an
allow-list of fields: a field the spawner never sends is refused, even one the engine
would ignore, so a new engine field cannot open a hole. Fields that exist only to be
switched off (Privileged, CapAdd, Devices, ...) are accepted only when empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernelhub.contract import DRIVE_LABEL

from .decode import ANY, MAP, Refused, check_fields, decode_body, normalise
from .policy import GuardConfig, check_image_reference, drive_name, runtime_labels


def _empty(value: Any) -> str | None:
    return None if value in (None, False, "", [], {}) else "must be empty or absent"


def _absent(value: Any) -> str | None:
    # MaskedPaths: [] unmasks /proc paths, so only absent (null) is harmless
    return None if value is None else "must be absent"


def _one_of(*allowed: Any) -> Callable[[Any], str | None]:
    return lambda value: None if value in allowed else f"must be one of {list(allowed)}"


def _int(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high):
            return f"must be a whole number from {low}" + (f" to {high}" if high else "")
        return None

    return check


def _strings(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return "must be a string or a list of strings"


def _any_scalar(value: Any) -> str | None:
    return None if value is None or isinstance(value, str | int | bool) else "must be a scalar"


MOUNT = {
    "Type": ANY,
    "Source": ANY,
    "Target": ANY,
    "ReadOnly": ANY,
    "Consistency": ANY,
    "VolumeOptions": {"NoCopy": ANY, "Labels": MAP, "DriverConfig": ANY},
    "BindOptions": ANY,
    "TmpfsOptions": ANY,
}
DEVICE_REQUEST = dict.fromkeys(("Driver", "Count", "DeviceIDs", "Capabilities", "Options"), ANY)
# switched off unless empty: every way out of the container the engine offers
MUST_BE_EMPTY = (  # noqa: SIM905 - a table of names reads better as words
    "Privileged CapAdd Devices DeviceCgroupRules Sysctls CgroupParent VolumesFrom Links "
    "PidMode UTSMode UsernsMode Cgroup Runtime OomKillDisable VolumeDriver Isolation "
    "ContainerIDFile PublishAllPorts GroupAdd ExtraHosts Dns DnsOptions DnsSearch Ulimits "
    "StorageOpt BlkioDeviceReadBps BlkioDeviceWriteBps BlkioDeviceReadIOps "
    "BlkioDeviceWriteIOps KernelMemory KernelMemoryTCP"
).split()
HOST_CONFIG: dict[str, Any] = {name: ANY for name in MUST_BE_EMPTY} | {
    "Binds": ANY, "NetworkMode": ANY, "PortBindings": MAP, "AutoRemove": ANY,
    "RestartPolicy": {"Name": ANY, "MaximumRetryCount": ANY},
    "LogConfig": {"Type": ANY, "Config": MAP},
    "CapDrop": ANY, "SecurityOpt": ANY, "Tmpfs": MAP, "PidsLimit": ANY, "Mounts": ANY,
    "DeviceRequests": ANY, "IpcMode": ANY, "CgroupnsMode": ANY,
    "MaskedPaths": ANY, "ReadonlyPaths": ANY,
    "Memory": ANY, "MemoryReservation": ANY, "MemorySwap": ANY, "NanoCpus": ANY,
    "CpuQuota": ANY, "CpuPeriod": ANY, "CpuShares": ANY, "CpusetCpus": ANY,
    "CpusetMems": ANY, "ShmSize": ANY, "OomScoreAdj": ANY, "Init": ANY,
    "ReadonlyRootfs": ANY,
}  # fmt: skip
CREATE: dict[str, Any] = {
    "Hostname": ANY, "Domainname": ANY, "User": ANY, "AttachStdin": ANY,
    "AttachStdout": ANY, "AttachStderr": ANY, "ExposedPorts": MAP, "Tty": ANY,
    "OpenStdin": ANY, "StdinOnce": ANY, "Env": ANY, "Cmd": ANY, "Entrypoint": ANY,
    "Healthcheck": {"Test": ANY, "Interval": ANY, "Timeout": ANY, "StartPeriod": ANY,
                    "Retries": ANY},
    "Image": ANY, "Volumes": MAP, "WorkingDir": ANY, "NetworkDisabled": ANY,
    "StopSignal": ANY, "StopTimeout": ANY, "Labels": MAP,
    "HostConfig": HOST_CONFIG, "NetworkingConfig": {"EndpointsConfig": MAP},
}  # fmt: skip
VOLUME_CREATE = {"Name": ANY, "Driver": ANY, "DriverOpts": MAP, "Labels": MAP}
TMPFS_OPTION = re.compile(r"rw|ro|nosuid|nodev|noexec|size=[0-9]+[kmgKMG]?|mode=[0-7]{3,4}")
HARMLESS_TMPFS = {"/tmp"}


@dataclass(frozen=True)
class ContainerCreate:
    image: str
    user: str
    body: dict[str, Any]  # normalised: what the engine is sent


def check_container_create(config: GuardConfig, raw: bytes, name: str = "") -> ContainerCreate:
    """The checked create body; Refused for any way out of a runtime container.
    The image still has to be checked against the engine (is_runtime_image)."""
    # the name is a DNS name on the runtimes network: DockerSpawner's are PREFIX-...
    if name and not name.lstrip("/").startswith(f"{config.prefix}-"):
        raise Refused(f"a runtime container's name starts with {config.prefix}-")
    body = normalise(decode_body(raw), CREATE, "")
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise Refused("Image must name a runtime image")
    check_image_reference(image)
    user, _server = runtime_labels(body.get("Labels") or {})
    problem = _user(body.get("User"))
    if problem:
        raise Refused(f"User: {problem}")
    check_fields(
        body,
        {
            "Env": _strings, "Cmd": _strings, "Entrypoint": _strings,
            "Labels": lambda v: None if all(isinstance(x, str) for x in v.values()) else
            "values must be strings",
        },
    )  # fmt: skip
    host = body.get("HostConfig") or {}
    check_fields(host, dict.fromkeys(MUST_BE_EMPTY, _empty))
    check_fields(
        host,
        {
            "MaskedPaths": _absent, "ReadonlyPaths": _absent,
            "IpcMode": _one_of(None, "", "private", "none", "shareable"),
            "CgroupnsMode": _one_of(None, "", "private"),
            "RestartPolicy": lambda v: _one_of(None, "", "no")(v.get("Name")),
            "LogConfig": lambda v: _empty(v.get("Type")) or _empty(v.get("Config")),
            "OomScoreAdj": _int(0, 1000), "PidsLimit": _int(1, config.max_pids),
            "CapDrop": _strings, "SecurityOpt": _security_opts,
            "Tmpfs": _tmpfs, "PortBindings": _port_bindings, "DeviceRequests": _gpu_requests,
            **dict.fromkeys(("Memory", "MemoryReservation", "NanoCpus", "CpuQuota",
                             "CpuPeriod", "CpuShares", "ShmSize"), _int(0)),
            "MemorySwap": _int(-1),
        },
    )  # fmt: skip
    if config.require_lockdown:
        _require_lockdown(host)
    _check_network(config, host, body.get("NetworkingConfig") or {})
    drive = drive_name(config, user)
    _check_binds(config, host.get("Binds"), drive)
    _check_mounts(config, host.get("Mounts"), drive)
    return ContainerCreate(image, user, body)


def _user(value: Any) -> str | None:
    if value in (None, ""):
        return None  # the image's own user (jovyan)
    if not isinstance(value, str):
        return "must be a string"
    for part in value.split(":"):
        if part == "root" or (part.isdigit() and int(part) == 0):
            return "a runtime never runs as root"
    return None


def _security_opts(value: Any) -> str | None:
    allowed = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
    if _strings(value) or isinstance(value, str):
        return "must be a list of strings"
    bad = [v for v in value or [] if v not in allowed]
    return f"only no-new-privileges is allowed, not {bad}" if bad else None


def _tmpfs(value: dict[str, Any]) -> str | None:
    for target, options in value.items():
        if target not in HARMLESS_TMPFS or not isinstance(options, str):
            return f"only {sorted(HARMLESS_TMPFS)} may be a tmpfs"
        if not all(TMPFS_OPTION.fullmatch(o) for o in options.split(",") if o):
            return f"tmpfs options {options!r} are not allowed"
    return None


def _port_bindings(value: dict[str, Any]) -> str | None:
    for bindings in value.values():
        for binding in bindings or []:
            if not isinstance(binding, dict) or binding.get("HostIp") != "127.0.0.1":
                return "ports may be published on 127.0.0.1 only"
            if set(binding) - {"HostIp", "HostPort"}:
                return "a port binding has HostIp and HostPort only"
    return None


def _gpu_requests(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        return "must be a list"
    for item in value:
        request = normalise(item, DEVICE_REQUEST, "HostConfig.DeviceRequests")
        if request.get("Driver") not in (None, "", "nvidia"):
            return "only NVIDIA GPUs may be requested"
        if request.get("Capabilities") != [["gpu"]]:
            return 'Capabilities must be [["gpu"]]'
        if _empty(request.get("Options")):
            return "Options must be empty"
        if _strings(request.get("DeviceIDs")) or _int(-1)(request.get("Count")):
            return "DeviceIDs must be strings and Count a number"
    return None


def _require_lockdown(host: dict[str, Any]) -> None:
    # a hub that omits them (compromised, or misconfigured) gets no container at all
    if "ALL" not in [str(c).upper() for c in host.get("CapDrop") or []]:
        raise Refused('HostConfig.CapDrop must include "ALL"')
    if not host.get("SecurityOpt"):
        raise Refused('HostConfig.SecurityOpt must include "no-new-privileges"')
    if host.get("PidsLimit") is None:
        raise Refused("HostConfig.PidsLimit must be set")


def _check_network(config: GuardConfig, host: dict[str, Any], networking: dict[str, Any]) -> None:
    mode = host.get("NetworkMode")
    if mode in (None, "", "default"):
        mode = "bridge"  # what the engine makes of it
    if mode not in config.networks:
        raise Refused(f"HostConfig.NetworkMode must be one of {list(config.networks)}")
    for name, endpoint in (networking.get("EndpointsConfig") or {}).items():
        # no aliases, addresses or links: a runtime named "hub" on the runtimes network
        # would receive what other runtimes send to the hub
        if name != mode or endpoint not in (None, {}):
            raise Refused(f"NetworkingConfig may name the network {mode} only, with no settings")


def _check_volume(config: GuardConfig, source: Any, drive: str, read_only: bool) -> None:
    if source == drive:
        return
    if source == config.site_snippets_volume and config.site_snippets_volume:
        if not read_only:
            raise Refused(f"the site snippets volume {source} is mounted read-only only")
        return
    raise Refused(
        f"only the user's own drive {drive} and the site snippets volume may be mounted, "
        f"not {source!r}"
    )


def _check_binds(config: GuardConfig, binds: Any, drive: str) -> None:
    if binds is None:
        return
    if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
        raise Refused("HostConfig.Binds must be a list of strings")
    for bind in binds:
        parts = bind.split(":")
        if len(parts) not in (2, 3) or not parts[1].startswith("/"):
            raise Refused(f"HostConfig.Binds entry {bind!r} is not VOLUME:/PATH[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise Refused(f"HostConfig.Binds mode {mode!r} is not ro or rw")
        _check_volume(config, parts[0], drive, mode == "ro")


def _check_mounts(config: GuardConfig, mounts: Any, drive: str) -> None:
    if mounts is None:
        return
    if not isinstance(mounts, list):
        raise Refused("HostConfig.Mounts must be a list")
    for item in mounts:
        mount = normalise(item, MOUNT, "HostConfig.Mounts")
        if mount.get("Type") != "volume":
            raise Refused("HostConfig.Mounts may hold volumes only (no binds, tmpfs, npipes)")
        if _empty(mount.get("BindOptions")) or _empty(mount.get("TmpfsOptions")):
            raise Refused("HostConfig.Mounts: no bind or tmpfs options")
        if (mount.get("VolumeOptions") or {}).get("DriverConfig") is not None:
            raise Refused("HostConfig.Mounts: no volume driver options")
        if not isinstance(mount.get("Target"), str) or not mount["Target"].startswith("/"):
            raise Refused("HostConfig.Mounts: Target must be an absolute path")
        _check_volume(config, mount.get("Source"), drive, mount.get("ReadOnly") is True)


def check_volume_create(config: GuardConfig, raw: bytes) -> dict[str, Any]:
    """A drive volume's create body: named for the user in its DRIVE_LABEL, local, no
    driver options (a local volume's options can bind any host path)."""
    body = normalise(decode_body(raw), VOLUME_CREATE, "")
    labels = body.get("Labels") or {}
    user = labels.get(DRIVE_LABEL)
    if set(labels) != {DRIVE_LABEL} or not isinstance(user, str) or not user:
        raise Refused(f"a volume must carry exactly the label {DRIVE_LABEL} (its owner)")
    if body.get("Name") != drive_name(config, user):
        raise Refused(f"only the drive of {user!r}, {drive_name(config, user)}, may be created")
    if body.get("Driver") not in (None, "", "local"):
        raise Refused("a drive uses the local volume driver")
    if body.get("DriverOpts"):
        raise Refused("a drive takes no driver options")
    return body
