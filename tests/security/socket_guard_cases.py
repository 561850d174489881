"""The socket guard's test cases: a runtime's create body as the spawner sends it, and
the attacks on it, shared by the pure policy table and the real-engine table.

An attack is a body (bytes: several are about raw JSON text) made from the valid one.
``DECOY`` in a body or path is replaced by a decoy container's ID at run time.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable
from typing import Any

from kernelhub.contract import (
    CPU_LIMIT_LABEL,
    DRIVE_LABEL,
    GPUS_LABEL,
    RUNTIME_TYPE_LABEL,
    SERVER_LABEL,
    USER_LABEL,
)
from kernelhub.spawner.socketguard.policy import GuardConfig

TEST_IMAGE = "kernelhub/runtime-test:latest"
RUN_ID = secrets.token_hex(3)
PREFIX = f"khguard{RUN_ID}"
NETWORK = f"{PREFIX}-net"
SNIPPETS = f"{PREFIX}-site-snippets"
USER = "mallory"
VICTIM = "victim"
CONFIG = GuardConfig(
    networks=(NETWORK,),
    drive_name_template=f"{PREFIX}-drive-{{username}}",
    site_snippets_volume=SNIPPETS,
    prefix=PREFIX,
)


def drive(user: str) -> str:
    return f"{PREFIX}-drive-{user}"


# what DockerRuntimeSpawner sends (captured from a real spawn), less the hub token
RUNTIME: dict[str, Any] = {
    "ExposedPorts": {"8888/tcp": None},
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "AttachStdin": False,
    "AttachStdout": True,
    "AttachStderr": True,
    "Env": ["KERNELHUB_RUNTIME_TYPE=cpu", "NVIDIA_VISIBLE_DEVICES=void"],
    "Cmd": ["sleep", "300"],
    "Image": TEST_IMAGE,
    "Volumes": {"/etc/kernelhub/snippets": {}, "/home/jovyan": {}},
    "NetworkDisabled": False,
    "HostConfig": {
        "Memory": 1073741824,
        "NetworkMode": NETWORK,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Binds": [f"{drive(USER)}:/home/jovyan:rw", f"{SNIPPETS}:/etc/kernelhub/snippets:ro"],
        "Links": [],
        "CpuQuota": 100000,
        "CpuPeriod": 100000,
        "Tmpfs": {"/tmp": "rw,nosuid,nodev"},
        "PidsLimit": 1024,
        "AutoRemove": True,
        "Mounts": [],
    },
    "Labels": {
        USER_LABEL: USER,
        SERVER_LABEL: "",
        RUNTIME_TYPE_LABEL: "cpu",
        GPUS_LABEL: "",
        CPU_LIMIT_LABEL: "1",
    },
}
DRIVE = {"Name": drive(USER), "Labels": {DRIVE_LABEL: USER}}

Body = Callable[[], bytes]


def runtime(edit: Callable[[dict[str, Any]], Any] | None = None) -> Body:
    def make() -> bytes:
        body = copy.deepcopy(RUNTIME)
        if edit is not None:
            edit(body)
        return json.dumps(body).encode()

    return make


def host(**fields: Any) -> Body:
    return runtime(lambda body: body["HostConfig"].update(fields))


def without(name: str) -> Body:
    return runtime(lambda body: body["HostConfig"].pop(name))


def text(old: str, new: str) -> Body:
    """The valid body's JSON text with ``old`` replaced: for escapes, case and keys
    that no dict can express."""
    return lambda: runtime()().replace(old.encode(), new.encode())


def volume(**fields: Any) -> Body:
    return lambda: json.dumps({**DRIVE, **fields}).encode()


# (case, body, what the refusal says): each is a way out of a container, or a way
# to harm another user, that the engine honours when it is let through
CREATE_ATTACKS: list[tuple[str, Body, str]] = [
    ("privileged, lower-case", text('"Memory"', '"privileged": true, "Memory"'), "Privileged"),
    (
        "privileged at the top (the engine's legacy HostConfig)",
        text('"Tty"', '"Privileged": true, "Tty"'),
        "Privileged",
    ),
    (
        "a host path as an escaped bind",
        text(f"{drive(USER)}:/home/jovyan:rw", "\\/etc:/h"),
        "not '/etc'",
    ),
    ("a host path bind", host(Binds=["/:/host:rw"]), "only the user's own drive"),
    ("capadd, lower-case", text('"Memory"', '"capadd": ["SYS_ADMIN"], "Memory"'), "CapAdd"),
    ("pidmode host, lower-case", text('"Memory"', '"pidmode": "host", "Memory"'), "PidMode"),
    ("device cgroup rules", host(DeviceCgroupRules=["a *:* rwm"]), "DeviceCgroupRules"),
    (
        "a raw device",
        host(
            Devices=[
                {
                    "PathOnHost": "/dev/mem",
                    "PathInContainer": "/dev/mem",
                    "CgroupPermissions": "rwm",
                }
            ]
        ),
        "Devices",
    ),
    ("another container's network namespace", host(NetworkMode="container:DECOY"), "NetworkMode"),
    ("the host's network", host(NetworkMode="host"), "NetworkMode"),
    (
        "an alias on the runtimes network",
        runtime(
            lambda b: b.update(
                NetworkingConfig={"EndpointsConfig": {NETWORK: {"Aliases": ["hub"]}}}
            )
        ),
        "no settings",
    ),
    (
        "another user's drive by name",
        host(Binds=[f"{drive(VICTIM)}:/home/jovyan:rw"]),
        "not '" + drive(VICTIM),
    ),
    (
        "another user's drive as a mount",
        host(Mounts=[{"Type": "volume", "Source": drive(VICTIM), "Target": "/v"}]),
        "not '" + drive(VICTIM),
    ),
    (
        "a bind mount",
        host(Mounts=[{"Type": "bind", "Source": "/etc", "Target": "/h"}]),
        "volumes only",
    ),
    (
        "a volume with driver options",
        host(
            Mounts=[
                {
                    "Type": "volume",
                    "Source": drive(USER),
                    "Target": "/v",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/etc"},
                        }
                    },
                }
            ]
        ),
        "driver options",
    ),
    (
        "the site snippets writable",
        host(Binds=[f"{SNIPPETS}:/etc/kernelhub/snippets:rw"]),
        "read-only",
    ),
    ("volumes of another container", host(VolumesFrom=["DECOY"]), "VolumesFrom"),
    ("a link to another container", host(Links=["DECOY:db"]), "Links"),
    ("sysctls", host(Sysctls={"kernel.core_pattern": "|/x"}), "Sysctls"),
    ("a cgroup parent", host(CgroupParent="/"), "CgroupParent"),
    ("no capabilities dropped", without("CapDrop"), "CapDrop must include"),
    ("no no-new-privileges", without("SecurityOpt"), "no-new-privileges"),
    ("no process limit", without("PidsLimit"), "PidsLimit"),
    ("an unlimited process limit", host(PidsLimit=-1), "PidsLimit"),
    (
        "seccomp off",
        host(SecurityOpt=["no-new-privileges", "seccomp=unconfined"]),
        "only no-new-privileges",
    ),
    ("/proc unmasked", host(MaskedPaths=[]), "MaskedPaths"),
    ("the host's user namespace", host(UsernsMode="host"), "UsernsMode"),
    ("the host's IPC", host(IpcMode="host"), "IpcMode"),
    ("the host's cgroup namespace", host(CgroupnsMode="host"), "CgroupnsMode"),
    ("another runtime (runc flags)", host(Runtime="io.containerd.runc.v2"), "Runtime"),
    ("a tmpfs over /etc", host(Tmpfs={"/etc": "rw"}), "tmpfs"),
    (
        "a published port on every address",
        host(PortBindings={"8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8888"}]}),
        "127.0.0.1",
    ),
    (
        "a non-GPU device request",
        host(
            DeviceRequests=[
                {
                    "Driver": "",
                    "Capabilities": [["compute", "gpu", "utility", "video"]],
                    "Count": -1,
                }
            ]
        ),
        "Capabilities",
    ),
    ("root", runtime(lambda b: b.update(User="0:0")), "root"),
    ("no runtime labels", runtime(lambda b: b.pop("Labels")), "runtime labels"),
    ("a field it does not know", host(Mystery=True), "Mystery is not allowed"),
    (
        "a Kelvin-sign key (Go folds it to k)",
        text('"Memory"', '"Networ\\u212aMode": "host", "Memory"'),
        "non-ASCII key",
    ),
    (
        "a long-s key (Go folds it to s)",
        text('"Memory"', '"Bind\\u017f": ["/:/h"], "Memory"'),
        "non-ASCII key",
    ),
    (
        "duplicate keys, the last one wins in Go",
        text('"Memory"', '"Privileged": false, "privileged": true, "Memory"'),
        "duplicate key",
    ),
    (
        "duplicate NetworkMode by case",
        text('"Memory"', '"networkmode": "host", "Memory"'),
        "duplicate key",
    ),
    ("invalid UTF-8", lambda: runtime()().replace(b'"Tty"', b'"T\xfftty": 1, "Tty"'), "UTF-8"),
    (
        "a second JSON value after the first",
        lambda: runtime()() + b'{"HostConfig": {"Privileged": true}}',
        "one JSON value",
    ),
    (
        "an image reference that is a path",
        runtime(lambda b: b.update(Image="../containers/DECOY")),
        "not an image reference",
    ),
]

VOLUME_ATTACKS: list[tuple[str, Body, str]] = [
    (
        "driver options binding a host path",
        volume(DriverOpts={"type": "none", "o": "bind", "device": "/etc"}),
        "no driver options",
    ),
    ("another volume driver", volume(Driver="vieux/sshfs"), "local volume driver"),
    ("a name that is not a drive", volume(Name=f"{PREFIX}-anything"), "only the drive of"),
    ("another user's drive, labelled as mine", volume(Name=drive(VICTIM)), "only the drive of"),
    ("no owner label", volume(Labels={}), "exactly the label"),
    (
        "driveropts, lower-case",
        lambda: volume()().replace(b'"Labels"', b'"driveropts": {"device": "/"}, "Labels"'),
        "no driver options",
    ),
]

# (case, method, path): calls the spawner never makes; DECOY is an unlabelled container
# and RUNTIME a container labelled as a runtime
REFUSED_CALLS: list[tuple[str, str, str]] = [
    ("exec in a runtime", "POST", "/v1.41/containers/RUNTIME/exec"),
    ("attach to a runtime", "POST", "/v1.41/containers/RUNTIME/attach?stream=1&stdin=1"),
    ("files into a runtime", "PUT", "/v1.41/containers/RUNTIME/archive?path=/"),
    ("files out of a runtime", "GET", "/v1.41/containers/RUNTIME/archive?path=/"),
    ("a runtime's limits changed", "POST", "/v1.41/containers/RUNTIME/update"),
    ("a runtime committed to an image", "POST", "/v1.41/commit?container=RUNTIME"),
    ("a runtime exported", "GET", "/v1.41/containers/RUNTIME/export"),
    ("an image build", "POST", "/v1.41/build"),
    ("an image pull", "POST", "/v1.41/images/create?fromImage=alpine"),
    ("events", "GET", "/v1.41/events"),
    ("swarm", "GET", "/v1.41/swarm"),
    ("a service updated", "POST", "/v1.41/services/RUNTIME/update?version=1"),
    ("secrets", "GET", "/v1.41/secrets"),
    ("plugins", "GET", "/v1.41/plugins"),
    ("a volume removed", "DELETE", f"/v1.41/volumes/{drive(VICTIM)}"),
    ("start of an unlabelled container", "POST", "/v1.41/containers/DECOY/start"),
    ("stop of an unlabelled container", "POST", "/v1.41/containers/DECOY/stop"),
    ("kill of an unlabelled container", "POST", "/v1.41/containers/DECOY/kill"),
    ("wait on an unlabelled container", "POST", "/v1.41/containers/DECOY/wait"),
    ("logs of an unlabelled container", "GET", "/v1.41/containers/DECOY/logs?stdout=1"),
    ("inspect of an unlabelled container", "GET", "/v1.41/containers/DECOY/json"),
    ("delete of an unlabelled container", "DELETE", "/v1.41/containers/DECOY?force=1"),
    ("following a runtime's logs", "GET", "/v1.41/containers/RUNTIME/logs?stdout=1&follow=1"),
    ("an old API version's start with a body", "POST", "/v1.23/containers/RUNTIME/start"),
    ("an encoded slash", "POST", "/v1.41/containers/RUNTIME%2Fexec"),
    ("a dot-dot path", "POST", "/v1.41/containers/RUNTIME/../DECOY/stop"),
    ("a double slash", "POST", "/v1.41//containers/DECOY/stop"),
    ("a repeated parameter", "DELETE", "/v1.41/containers/RUNTIME?link=0&link=1"),
    ("an unknown parameter", "POST", "/v1.41/containers/RUNTIME/stop?signal=SIGKILL"),
    ("an image that is not a runtime's", "GET", "/v1.41/images/debian:bookworm-slim/json"),
]
