"""The socket guard's Swarm rules: what SwarmRuntimeSpawner may do through it, and nothing
more (README: What the socket guard allows).

The tables are pure: each attack on a runtime's service create is refused with 403 and
a message, and the spawner's own body (captured from docker-py, as SwarmRuntimeSpawner
sends it) is let through. The last test runs a real swarm, a real guard process in front
of the host's engine, and a real hub whose SwarmRuntimeSpawner talks to that guard.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from harness import (
    HubProcess,
    end_process,
    free_port,
    start_runtime,
    stop_all_runtimes,
    wait_until,
)

from kernelhub.contract import (
    CPU_LIMIT_LABEL,
    DRIVE_LABEL,
    GPUS_LABEL,
    RUNTIME_TYPE_LABEL,
    SERVER_LABEL,
    USER_LABEL,
)
from kernelhub.spawner.socketguard.__main__ import parse_args
from kernelhub.spawner.socketguard.decode import Refused
from kernelhub.spawner.socketguard.policy import GuardConfig, match
from kernelhub.spawner.socketguard.server import GuardHandler
from kernelhub.spawner.socketguard.services import (
    check_service_create,
    filter_services,
    filter_tasks,
    info_subset,
)

PREFIX = "khswg"
REGISTRY = "127.0.0.1:5999"
DRIVE_ROOT = "/srv/khswg-drives"
NETWORK = f"{PREFIX}-runtimes"
SNIPPETS = f"{PREFIX}-site-snippets"
IMAGE = "kernelhub/runtime-test:latest"
USER, VICTIM = "mallory", "victim"
CONFIG = GuardConfig(
    networks=(NETWORK,),
    drive_name_template=f"{PREFIX}-drive-{{username}}",
    site_snippets_volume=SNIPPETS,
    prefix=PREFIX,
    image_registry=REGISTRY,
    drive_root=DRIVE_ROOT,
)
LABELS = {
    USER_LABEL: USER, SERVER_LABEL: "", RUNTIME_TYPE_LABEL: "cpu", GPUS_LABEL: "",
    CPU_LIMIT_LABEL: "0.5",
}  # fmt: skip


def drive(user: str) -> str:
    return f"{PREFIX}-drive-{user}"


# what SwarmRuntimeSpawner.create_object has docker-py send (shape captured from
# APIClient.create_service with the spawner's kwargs), less the hub token
SERVICE: dict[str, Any] = {
    "Name": f"{PREFIX}-{USER}",
    "Labels": LABELS,
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": f"{REGISTRY}/{IMAGE}",
            "Command": None,
            "Args": ["/usr/local/bin/kernelhub-runtime", "--ServerApp.port=8888"],
            "Env": ["JUPYTERHUB_USER=mallory", "NVIDIA_VISIBLE_DEVICES=void"],
            "User": "jovyan",
            "Labels": LABELS,
            "Mounts": [
                {"Target": "/home/jovyan/drive", "Source": f"{DRIVE_ROOT}/{drive(USER)}",
                 "Type": "bind", "ReadOnly": False, "BindOptions": {"Propagation": "rprivate"}},
                {"Target": "/opt/site-snippets", "Source": SNIPPETS, "Type": "volume",
                 "ReadOnly": True},
                {"Target": "/tmp", "Source": "", "Type": "tmpfs", "ReadOnly": False,
                 "TmpfsOptions": {"Mode": 1023, "SizeBytes": 1 << 30}},
            ],
            "Init": True,
            "CapabilityDrop": ["ALL"],
        },
        "Resources": {
            "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 512 << 20, "Pids": 1024},
        },
        "RestartPolicy": {"Condition": "none", "Delay": 0, "MaxAttempts": 0, "Window": 0},
        "Placement": {"Constraints": [f"node.hostname=={PREFIX}-worker-1"]},
        "Networks": [],
    },
    "Mode": None,
    "Networks": None,
    "EndpointSpec": {
        "Ports": [{"Protocol": "tcp", "PublishedPort": None, "TargetPort": 8888,
                   "PublishMode": "host"}],
    },
}  # fmt: skip
DROP = object()
Body = Callable[[], bytes]


def service(*edits: tuple[str, Any]) -> Body:
    """The spawner's body with each (dotted path, value) set; DROP removes the field.
    A path part that is a number indexes a list."""

    def body() -> bytes:
        spec = copy.deepcopy(SERVICE)
        for path, value in edits:
            *parents, last = path.split(".")
            node: Any = spec
            for part in parents:
                node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
            key: Any = int(last) if last.isdigit() else last
            if value is DROP:
                del node[key]
            else:
                node[key] = value
        return json.dumps(spec).encode()

    return body


def raw(old: str, new: str) -> Body:
    return lambda: service()().replace(old.encode(), new.encode(), 1)


CS = "TaskTemplate.ContainerSpec"
MOUNT0 = f"{CS}.Mounts.0"
PORT0 = "EndpointSpec.Ports.0"
VICTIM_LABELS = {**LABELS, USER_LABEL: VICTIM}

# (case, body, what the refusal says)
SERVICE_ATTACKS: list[tuple[str, Body, str]] = [
    ("seccomp unconfined", service((f"{CS}.Privileges", {"Seccomp": {"Mode": "unconfined"}})),
     "only NoNewPrivileges"),
    ("AppArmor unconfined", service((f"{CS}.Privileges", {"AppArmor": {"Mode": "disabled"}})),
     "only NoNewPrivileges"),
    ("an SELinux label", service((f"{CS}.Privileges", {"SELinuxContext": {"Disable": True}})),
     "only NoNewPrivileges"),
    ("a container-style Privileged", service((f"{CS}.Privileged", True)), "is not allowed"),
    ("a foreign image", service((f"{CS}.Image", "debian:bookworm-slim")),
     f"comes from the registry {REGISTRY}"),
    ("another registry", service((f"{CS}.Image", f"evil.test:5000/{IMAGE}")),
     "comes from the registry"),
    ("the registry as a prefix of another host",
     service((f"{CS}.Image", f"{REGISTRY}.evil.test/{IMAGE}")), "comes from the registry"),
    ("the registry's port as a prefix of another", service((f"{CS}.Image", f"{REGISTRY}9/{IMAGE}")),
     "comes from the registry"),
    ("a second registry after ours",
     service((f"{CS}.Image", f"{REGISTRY}/evil.test:5000/{IMAGE}")), "names a registry"),
    ("an image path that walks", service((f"{CS}.Image", f"{REGISTRY}/../containers/x")),
     "not an image reference"),
    ("no runtime labels on the service", service(("Labels", {})), "runtime labels"),
    ("no runtime labels on the container", service((f"{CS}.Labels", {})), "runtime labels"),
    ("the container labelled as another user's", service((f"{CS}.Labels", VICTIM_LABELS)),
     "the service's runtime labels"),
    ("root", service((f"{CS}.User", "root")), "User must be 1000 or jovyan"),
    ("uid 0", service((f"{CS}.User", "0")), "User must be"),
    ("jovyan in group root", service((f"{CS}.User", "jovyan:0")), "User must be"),
    ("the image's user (root in most)", service((f"{CS}.User", DROP)), "User must be"),
    ("another uid", service((f"{CS}.User", "1001")), "User must be"),
    ("a capability added", service((f"{CS}.CapabilityAdd", ["CAP_SYS_ADMIN"])),
     "CapabilityAdd: must be empty"),
    ("capabilities kept", service((f"{CS}.CapabilityDrop", DROP)),
     'CapabilityDrop must include "ALL"'),
    ("capabilityadd, lower-case", raw('"Init"', '"capabilityadd": ["CAP_SYS_ADMIN"], "Init"'),
     "CapabilityAdd: must be empty"),
    ("a duplicate key", raw('"Init": true', '"Init": true, "init": false'), "duplicate key"),
    ("a Kelvin-sign key", raw('"Init"', '"\u212aey": 1, "Init"'), "non-ASCII key"),
    ("the docker group", service((f"{CS}.Groups", ["docker"])), "Groups: must be empty"),
    ("sysctls", service((f"{CS}.Sysctls", {"net.ipv4.ip_forward": "1"})), "Sysctls: must be empty"),
    ("ulimits", service((f"{CS}.Ulimits", [{"Name": "nofile", "Soft": 1, "Hard": 1}])),
     "Ulimits: must be empty"),
    ("a secret", service((f"{CS}.Secrets", [{"SecretID": "x", "SecretName": "db"}])),
     "Secrets: must be empty"),
    ("a config", service((f"{CS}.Configs", [{"ConfigID": "x", "ConfigName": "c"}])),
     "Configs: must be empty"),
    ("answering for the hub", service((f"{CS}.Hosts", ["10.0.0.1 hub"])), "Hosts: must be empty"),
    ("its own DNS", service((f"{CS}.DNSConfig", {"Nameservers": ["10.0.0.1"]})),
     "DNSConfig: must be empty"),
    ("a bind of /", service((f"{MOUNT0}.Source", "/")), "the only bind is the user's drive"),
    ("the Docker socket", service((f"{MOUNT0}.Source", "/var/run/docker.sock")),
     "the only bind is the user's drive"),
    ("another user's drive folder", service((f"{MOUNT0}.Source", f"{DRIVE_ROOT}/{drive(VICTIM)}")),
     "the only bind is the user's drive"),
    ("the drive root itself", service((f"{MOUNT0}.Source", DRIVE_ROOT)), "the only bind"),
    ("a walk out of the drive root",
     service((f"{MOUNT0}.Source", f"{DRIVE_ROOT}/{drive(USER)}/../../../etc")), "the only bind"),
    ("a shared bind", service((f"{MOUNT0}.BindOptions.Propagation", "rshared")), "private"),
    ("a bind that makes its folder", service((f"{MOUNT0}.BindOptions.CreateMountpoint", True)),
     "made by the hub"),
    ("another user's drive volume",
     service((MOUNT0, {"Type": "volume", "Source": drive(VICTIM), "Target": "/d"})),
     f"only the user's own drive {drive(USER)}"),
    ("a volume binding a host folder",
     service((MOUNT0, {"Type": "volume", "Source": drive(USER), "Target": "/d",
                       "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {
                           "type": "none", "o": "bind", "device": "/etc"}}}})),
     "no volume driver options"),
    ("a volume's subpath", service((MOUNT0, {"Type": "volume", "Source": drive(USER),
                                               "Target": "/d", "VolumeOptions": {"Subpath": "x"}})),
     "subpaths"),
    ("the drive labelled as another's",
     service((MOUNT0, {"Type": "volume", "Source": drive(USER), "Target": "/d",
                       "VolumeOptions": {"Labels": {DRIVE_LABEL: VICTIM}}})), "labelled"),
    ("the site snippets writable", service((f"{CS}.Mounts.1.ReadOnly", False)), "read-only only"),
    ("a tmpfs over /etc", service((f"{CS}.Mounts.2.Target", "/etc")), "the only tmpfs is /tmp"),
    ("a cluster volume", service((f"{CS}.Mounts.1.Type", "cluster")), "no cluster mounts"),
    ("an npipe", service((f"{CS}.Mounts.1.Type", "npipe")), "no npipe mounts"),
    ("a relative target", service((f"{CS}.Mounts.1.Target", "etc")), "absolute path"),
    ("an ingress port", service((f"{PORT0}.PublishMode", "ingress")), 'PublishMode must be "host"'),
    ("the default (ingress) mode", service((f"{PORT0}.PublishMode", DROP)), "PublishMode"),
    ("a fixed port", service((f"{PORT0}.PublishedPort", 22)), "PublishedPort must be 0"),
    ("a udp port", service((f"{PORT0}.Protocol", "udp")), "Protocol must be tcp"),
    ("global mode", service(("Mode", {"Global": {}})),
     "Mode.Global: a runtime is one replicated task"),
    ("a job on every node", service(("Mode", {"GlobalJob": {}})), "Mode.GlobalJob"),
    ("many replicas", service(("Mode", {"Replicated": {"Replicas": 50}})), "Replicas 1"),
    ("no memory limit", service(("TaskTemplate.Resources.Limits.MemoryBytes", DROP)),
     "Limits.MemoryBytes must be set"),
    ("no CPU limit", service(("TaskTemplate.Resources.Limits.NanoCPUs", 0)),
     "Limits.NanoCPUs must be set"),
    ("no process limit", service(("TaskTemplate.Resources.Limits.Pids", DROP)),
     "Limits.Pids must be set"),
    ("a process limit past the guard's", service(("TaskTemplate.Resources.Limits.Pids", 10**6)),
     "up to 4096"),
    ("no limits at all", service(("TaskTemplate.Resources", DROP)), "must be set"),
    ("generic resources", service(("TaskTemplate.Resources.Reservations",
                                   {"GenericResources": [{"DiscreteResourceSpec": {}}]})),
     "GenericResources"),
    ("restarted forever", service(("TaskTemplate.RestartPolicy.Condition", "any")),
     'Condition must be "none"'),
    ("on every manager", service(("TaskTemplate.Placement.Constraints", ["node.role==manager"])),
     "node.hostname==NAME only"),
    ("a constraint smuggled after a name",
     service(("TaskTemplate.Placement.Constraints", ["node.hostname==a,node.role==manager"])),
     "node.hostname==NAME only"),
    ("spread preferences", service(("TaskTemplate.Placement.Preferences", [{"Spread": {}}])),
     "Preferences"),
    ("the ingress network", service(("TaskTemplate.Networks", [{"Target": "ingress"}])),
     f"only ['{NETWORK}']"),
    ("an alias on the runtimes network",
     service(("TaskTemplate.Networks", [{"Target": NETWORK, "Aliases": ["hub"]}])), "no aliases"),
    ("the deprecated networks field", service(("Networks", [{"Target": "ingress"}])),
     "Networks: must be empty"),
    ("a plugin", service(("TaskTemplate.PluginSpec", {"Name": "x"})), "PluginSpec"),
    ("a network attachment", service(("TaskTemplate.NetworkAttachmentSpec", {"ContainerID": "x"})),
     "NetworkAttachmentSpec"),
    ("another runtime", service(("TaskTemplate.Runtime", "plugin")), "must be container"),
    ("its own log driver", service(("TaskTemplate.LogDriver", {"Name": "syslog"})), "LogDriver"),
    ("a service named for no runtime", service(("Name", "hub")), f"name starts with {PREFIX}-"),
    ("an unknown field", service(("UpdateConfig", {"Parallelism": 1})), "is not allowed"),
    ("isolation", service((f"{CS}.Isolation", "hyperv")), "Isolation: must be empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "says"), SERVICE_ATTACKS, ids=[c[0] for c in SERVICE_ATTACKS]
)
def test_a_service_create_that_leaves_the_runtime_is_refused(
    case: str, body: Body, says: str
) -> None:
    with pytest.raises(Refused) as refused:
        check_service_create(CONFIG, body())
    assert says in refused.value.message
    assert refused.value.status == 403


VOLUME_DRIVE = {"Target": "/home/jovyan/drive", "Source": drive(USER), "Type": "volume",
                "ReadOnly": False, "VolumeOptions": {"Labels": {DRIVE_LABEL: USER}}}  # fmt: skip
# (case, guard config, body)
ALLOWED: list[tuple[str, GuardConfig, Body]] = [
    ("the spawner's body", CONFIG, service()),
    ("a drive volume", CONFIG, service((MOUNT0, VOLUME_DRIVE))),
    ("no registry: the image as the engine names it",
     GuardConfig(networks=(NETWORK,), drive_name_template=f"{PREFIX}-drive-{{username}}",
                 site_snippets_volume=SNIPPETS, prefix=PREFIX),
     service((MOUNT0, VOLUME_DRIVE), (f"{CS}.Image", IMAGE))),
    ("no placement, the runtimes network, no-new-privileges", CONFIG,
     service(("TaskTemplate.Placement", DROP), ("TaskTemplate.Networks", [{"Target": NETWORK}]),
             (f"{CS}.Privileges", {"NoNewPrivileges": True}),
             ("Mode", {"Replicated": {"Replicas": 1}}))),
    ("uid 1000", CONFIG, service((f"{CS}.User", "1000:1000"))),
]  # fmt: skip


@pytest.mark.parametrize(("case", "config", "body"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_the_spawners_service_is_let_through_as_sent(
    case: str, config: GuardConfig, body: Body
) -> None:
    create = check_service_create(config, body())
    sent = json.loads(body())
    # forwarded as sent (an absent struct, null, is forwarded as {}: the same to Go)
    assert create.body["TaskTemplate"] == sent["TaskTemplate"]
    assert (create.body["Labels"], create.body["EndpointSpec"]) == (LABELS, sent["EndpointSpec"])
    assert create.user == USER
    assert create.local_image == IMAGE  # what the manager's engine is asked about


def test_without_a_drive_root_no_bind_is_allowed() -> None:
    config = GuardConfig(
        networks=(NETWORK,), drive_name_template=f"{PREFIX}-drive-{{username}}",
        site_snippets_volume=SNIPPETS, prefix=PREFIX, image_registry=REGISTRY,
    )  # fmt: skip
    with pytest.raises(Refused, match="the guard has no --drive-root"):
        check_service_create(config, service()())


# (method, path): what the hub's swarm calls look like, and the kind of check each gets
SWARM_CALLS = [
    ("GET", "/v1.41/info", "info"),
    ("POST", "/v1.41/services/create", "service-create"),
    ("GET", f"/v1.41/services/{PREFIX}-{USER}", "service-inspect"),
    ("GET", "/v1.41/services/abc123?insertDefaults=1", "service-inspect"),
    ("DELETE", "/v1.41/services/abc123", "service"),
    ("GET", '/v1.41/services?filters={"name":["x"]}', "service-list"),
    ("GET", '/v1.41/tasks?filters={"service":["x"],"desired-state":["running"]}', "task-list"),
    ("GET", '/v1.41/nodes?filters={"role":["worker"]}', "forward"),
    ("GET", "/v1.41/nodes/abc123", "forward"),
]
REFUSED_SWARM_CALLS = [
    ("a service updated", "POST", "/v1.41/services/abc/update?version=3"),
    ("a service's logs (its environment's secrets printed)", "GET", "/v1.41/services/abc/logs"),
    ("a task's logs", "GET", "/v1.41/tasks/abc/logs"),
    ("the swarm's join tokens", "GET", "/v1.41/swarm"),
    ("the swarm left", "POST", "/v1.41/swarm/leave?force=1"),
    ("the swarm's settings", "POST", "/v1.41/swarm/update"),
    ("a node promoted", "POST", "/v1.41/nodes/abc/update?version=1"),
    ("a node removed", "DELETE", "/v1.41/nodes/abc"),
    ("secrets", "GET", "/v1.41/secrets"),
    ("a config", "POST", "/v1.41/configs/create"),
    ("a service create with a parameter", "POST", "/v1.41/services/create?x=1"),
    ("a name with a slash", "DELETE", "/v1.41/services/a%2Fb"),
]


@pytest.mark.parametrize(("method", "path", "kind"), SWARM_CALLS)
def test_the_swarm_calls_the_hub_makes_are_routed_to_their_checks(
    method: str, path: str, kind: str
) -> None:
    raw_path, _, query = path.partition("?")
    matched = match(method, raw_path, query)
    assert matched.kind == kind
    # the quota daemon's read-only address gets none of them
    assert not GuardHandler.readable(matched)


@pytest.mark.parametrize(
    ("case", "method", "path"), REFUSED_SWARM_CALLS, ids=[c[0] for c in REFUSED_SWARM_CALLS]
)
def test_other_swarm_calls_are_refused(case: str, method: str, path: str) -> None:
    raw_path, _, query = path.partition("?")
    with pytest.raises(Refused):
        match(method, raw_path, query)


def test_info_keeps_what_the_hub_reads_and_nothing_else() -> None:
    info = {
        "Name": "node-1", "ServerVersion": "27.0", "HTTPProxy": "http://user:secret@proxy:3128",
        "RegistryConfig": {"Mirrors": ["x"]}, "DockerRootDir": "/var/lib/docker",
        "Labels": ["a=b"], "SecurityOptions": ["name=seccomp"],
        "Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeAddr": "10.0.0.2",
                  "NodeID": "n1", "Nodes": 3, "Managers": 1, "RemoteManagers": [],
                  "Cluster": {"Spec": {"CAConfig": {"SigningCAKey": "secret"}}}},
    }  # fmt: skip
    kept = info_subset(info)
    assert kept["Name"] == "node-1" and kept["ServerVersion"] == "27.0"
    assert kept["Swarm"]["ControlAvailable"] is True and kept["Swarm"]["NodeAddr"] == "10.0.0.2"
    assert "secret" not in json.dumps(kept)
    assert not {"HTTPProxy", "RegistryConfig", "DockerRootDir", "Labels"} & set(kept)
    assert "Cluster" not in kept["Swarm"]


def test_lists_show_runtime_services_and_tasks_only() -> None:
    runtime = {"Spec": {"Labels": LABELS, "TaskTemplate": {"ContainerSpec": {"Labels": LABELS}}}}
    half = {"Spec": {"Labels": LABELS, "TaskTemplate": {"ContainerSpec": {}}}}
    other = {"Spec": {"Labels": {"app": "db"}, "TaskTemplate": {"ContainerSpec": {}}}}
    assert filter_services([runtime, half, other, "junk"]) == [runtime]
    task = {"Spec": {"ContainerSpec": {"Labels": LABELS}}}
    assert filter_tasks([task, {"Spec": {"ContainerSpec": {"Labels": {}}}}, None]) == [task]
    assert filter_services({"message": "x"}) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--drive-root", "srv/drives"], "normalised absolute path"),
        (["--drive-root", "/srv/../etc"], "normalised absolute path"),
        (["--image-registry", "evil.test:5000/../x"], "HOST[:PORT][/PATH]"),
        (["--image-registry", "https://evil.test"], "HOST[:PORT][/PATH]"),
    ],
)
def test_bad_swarm_options_are_refused_at_start(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert says in capsys.readouterr().err


def test_swarm_options_reach_the_config() -> None:
    _, config = parse_args(["--image-registry", REGISTRY, "--drive-root", DRIVE_ROOT])
    assert (config.image_registry, config.drive_root) == (REGISTRY, DRIVE_ROOT)


# ---- the real thing: a swarm, the guard process, a hub spawning through it -----------

GUARD = str(Path(sys.executable).parent / "kernelhub-socket-guard")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from swarm_cluster import swarm_cluster

    # one node (the host, the manager): the runtime's drive is a folder of the host
    with swarm_cluster(PREFIX, workers=0, images=[IMAGE], shared_dir=True) as built:
        yield built


@pytest.fixture(scope="module")
def swarm_guard(
    cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path_factory.mktemp("swarm-guard") / "guard.log"
    port = free_port()
    command = [
        GUARD, "--listen", f"127.0.0.1:{port}", "--prefix", PREFIX,
        "--drive-name-template", f"{PREFIX}-drive-{{username}}", "--site-snippets-volume", "",
        "--image-registry", cluster.registry, "--drive-root", cluster.shared_dir,
        "--log-level", "DEBUG",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/_ping", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=30, what="the guard to answer")
        yield url, log_path
    finally:
        end_process(proc)


def status_and_message(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(response.json().get("message", ""))


@pytest.mark.docker
@pytest.mark.swarm
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the swarm's lock may wait for another run's cluster
def test_a_hub_runs_swarm_runtimes_through_the_guard_and_nothing_else_passes(
    cluster: Any,
    swarm_guard: tuple[str, Path],
    hub_factory: Callable[..., HubProcess],
) -> None:
    url, log_path = swarm_guard
    manager: docker.DockerClient = cluster.manager
    decoy = manager.services.create(
        cluster.image(IMAGE), ["sleep", "900"], name=f"{PREFIX}-decoy",
        labels=cluster.labels(purpose="decoy"), user="1000",
    )  # fmt: skip
    api = f"{url}/v1.41"
    # someone else's service: not seen, not inspected, not removed
    assert status_and_message(httpx.get(f"{api}/services/{decoy.id}"))[0] == 403
    assert status_and_message(httpx.delete(f"{api}/services/{PREFIX}-decoy"))[0] == 403
    listed = httpx.get(f"{api}/services").json()
    assert decoy.id not in [s["ID"] for s in listed]
    wait_until(lambda: decoy.tasks(), timeout=60, what="the decoy's task")
    assert httpx.get(f"{api}/tasks").json() == []
    info = httpx.get(f"{api}/info").json()
    assert info["Swarm"]["ControlAvailable"] is True and "Cluster" not in info["Swarm"]
    assert httpx.get(f"{api}/nodes").status_code == 200
    # a global service of a runtime image, with the runtime labels: refused, none made
    body = json.loads(service(("Mode", {"Global": {}}))())
    body["TaskTemplate"]["ContainerSpec"]["Image"] = cluster.image(IMAGE)
    attack = httpx.post(f"{api}/services/create", json=body)
    assert status_and_message(attack) == (403, "Mode.Global: a runtime is one replicated task")
    assert [s.name for s in manager.services.list()] == [f"{PREFIX}-decoy"]

    config = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{cluster.image(IMAGE)}",
      "mem_limit": "512M", "cpu_limit": 0.5}},
]
c.SwarmRuntimeSpawner.prefix = "{PREFIX}"
c.SwarmRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.SwarmRuntimeSpawner.site_snippets_volume = ""
c.SwarmRuntimeSpawner.drive_root = "{cluster.shared_dir}"
c.SwarmRuntimeSpawner.image_registry = "{cluster.registry}"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
"""
    start = len(log_path.read_text())
    hub = hub_factory(
        config_text=config, name="swarmguard", runtimes="swarm", quotas=False,
        env={"DOCKER_HOST": url.replace("http://", "tcp://")},
    )  # fmt: skip
    assert "Runtimes: Docker Swarm services" in hub.log()
    user = "gina"
    with hub.api(hub.token(user)) as client:
        model = start_runtime(client, user, "", "cpu")
        assert client.get(f"{hub.url}{model['url']}api/status").status_code == 200
        (svc,) = manager.services.list(filters={"label": f"{USER_LABEL}={user}"})
        spec = svc.attrs["Spec"]["TaskTemplate"]
        assert spec["ContainerSpec"]["User"] == "jovyan"
        assert spec["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
        stop_all_runtimes(client, user)
    wait_until(
        lambda: not manager.services.list(filters={"label": f"{USER_LABEL}={user}"}),
        timeout=60, what="the runtime's service removed",
    )  # fmt: skip
    guarded = log_path.read_text()[start:]
    assert f"creating a runtime service of {cluster.image(IMAGE)} for {user}" in guarded
    assert "refused" not in guarded, guarded
    decoy.reload()  # still there: nothing the hub did touched it
