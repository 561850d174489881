"""docker-stack.yml, the cluster deployment (`docker stack deploy`), as a specification.

Read as YAML, no engine needed: every safe default of docker-compose.yml carries over,
service by service (the tables below), and nothing relies on a key `docker stack
deploy` silently ignores. Then, on a real (one-node) swarm, the stack is deployed,
every service runs, the hub answers on its published port, the attacks the file
guards against fail, and `docker stack rm` leaves nothing behind (test_stack_swarm.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "docker-stack.yml"
HUB_CONFIG = ROOT / "images/hub/kernelhub_config.py"  # the stack's hub_config
STACK: dict[str, Any] = yaml.safe_load(STACK_FILE.read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = STACK["services"]
SOCKET = "/var/run/docker.sock"
REGISTRY_VAR = re.compile(r"^\$\{KERNELHUB_REGISTRY:\?[^}]*\}/")

# service: (user, Swarm mode, read-only root). Every one but PostgreSQL drops every
# capability (the official image starts as root, to own its data, then drops to postgres).
RUN_AS = {
    "postgres": (None, "replicated", False),  # the image's entrypoint: root, then postgres
    "registry": ("10003:10003", "replicated", True),
    "docker-proxy": ("0:0", "replicated", True),  # root only to open the socket
    "hub": ("10001:10001", "replicated", True),
    "node-guard": ("0:10002", "global", True),  # the group: the daemon's socket is 0660
    "quotad": ("10002:10002", "global", True),
    # root for iptables in the runtimes' namespaces, with the three capabilities below
    "runtime-firewall": ("0:0", "global", True),
}
# the only capabilities any service gets back: the runtimes' firewall's, to open (PTRACE),
# enter (SYS_ADMIN) and firewall (NET_ADMIN) each runtime's network namespace
CAP_ADD = {"runtime-firewall": ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]}
# keys `docker stack deploy` ignores (Engine 20.10, file format 3.8): a safe default
# written with one of them would silently not be there
SWARM_IGNORES = {
    "build", "cgroup_parent", "container_name", "depends_on", "devices", "external_links",
    "ipc", "links", "network_mode", "pid", "privileged", "restart", "security_opt",
    "tmpfs", "userns_mode", "volumes_from",
}  # fmt: skip
# host paths a service may bind-mount, and how: nothing else of a node is in any task
BINDS = {
    ("docker-proxy", SOCKET): SOCKET,
    ("node-guard", SOCKET): SOCKET,
    ("quotad", "/proc"): "/host/proc",
    ("runtime-firewall", "/proc"): "/host/proc",
}
# the shared drive root, at the same path as on every node: the hub makes users' folders;
# unset, drives are node-local volumes, and /dev/null stands in for the hub's mount
DRIVE_ROOT = "${KERNELHUB_DRIVE_ROOT:-}"
DRIVE_MOUNT = "${KERNELHUB_DRIVE_ROOT:-/dev/null}"
# what publishes a port, the container port, and nothing else does
PUBLISHED = {"hub": 8000, "registry": 5000}
# the services that hold each secret, as in docker-compose.yml
SECRET_TARGETS = {
    "postgres": {"postgres_password", "hub_db_password", "quotad_db_password"},
    "hub": {"hub_db_password", "quotad_token"},
    "quotad": {"quotad_db_password", "quotad_token"},
}


def mounts(service: str) -> list[dict[str, Any]]:
    """The service's mounts, each in the long syntax (the file uses it for every bind)."""
    out = []
    for volume in SERVICES[service].get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            volume = {"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]}
        out.append(volume)
    return out


def command_flag(service: str, flag: str) -> str:
    values = [a.split("=", 1)[1] for a in SERVICES[service]["command"] if a.startswith(f"{flag}=")]
    assert len(values) == 1, f"{service}: {flag} given {len(values)} times"
    return values[0]


@pytest.mark.parametrize("service", list(RUN_AS))
def test_each_service_runs_as_its_own_user_without_capabilities(service: str) -> None:
    user, mode, read_only = RUN_AS[service]
    spec = SERVICES[service]
    assert spec.get("user") == user
    assert spec.get("deploy", {}).get("mode", "replicated") == mode
    assert spec.get("read_only", False) is read_only
    if service != "postgres":
        assert spec.get("cap_drop") == ["ALL"]
    assert spec.get("cap_add") == CAP_ADD.get(service)


@pytest.mark.parametrize("service", list(RUN_AS))
def test_names_resolve_to_tasks_not_to_a_virtual_ip(service: str) -> None:
    # a virtual IP needs the kernel's IPVS; one-task services gain nothing from it
    assert SERVICES[service]["deploy"]["endpoint_mode"] == "dnsrr"


def test_every_service_in_the_file_is_specified_here() -> None:
    assert set(SERVICES) == set(RUN_AS)


@pytest.mark.parametrize("service", list(RUN_AS))
def test_no_key_that_swarm_ignores(service: str) -> None:
    ignored = SWARM_IGNORES & set(SERVICES[service])
    assert not ignored, f"{service}: {sorted(ignored)} would be dropped by docker stack deploy"


@pytest.mark.parametrize("service", list(RUN_AS))
def test_host_paths_only_the_socket_for_guards_and_proc_for_the_daemon(service: str) -> None:
    for mount in mounts(service):
        if mount["type"] != "bind":
            continue
        if (service, mount["source"]) == ("hub", DRIVE_MOUNT):
            assert mount["target"] == DRIVE_MOUNT
            assert SERVICES["hub"]["environment"]["KERNELHUB_DRIVE_ROOT"] == DRIVE_ROOT
            assert command_flag("docker-proxy", "--drive-root") == DRIVE_ROOT
            continue
        key = (service, mount["source"])
        assert key in BINDS, f"{service} bind-mounts {mount['source']} from the node"
        assert mount["target"] == BINDS[key]
        assert mount.get("read_only") is True, f"{service}: {mount['source']} is writable"


def test_only_the_socket_guards_hold_the_docker_socket() -> None:
    holders = {s for s in SERVICES for m in mounts(s) if m.get("source") == SOCKET}
    assert holders == {"docker-proxy", "node-guard"}
    for service in SERVICES:
        env = SERVICES[service].get("environment", {})
        assert SOCKET not in str(env.get("DOCKER_HOST", "")), service


@pytest.mark.parametrize("service", list(RUN_AS))
def test_published_ports_are_host_mode_never_the_routing_mesh(service: str) -> None:
    ports = SERVICES[service].get("ports", [])
    if service not in PUBLISHED:
        assert not ports, f"{service} publishes {ports}"
        return
    # the long syntax only: "127.0.0.1:8000:8000" means nothing to Swarm (no host IP)
    assert [p["mode"] for p in ports] == ["host"]
    assert [p["target"] for p in ports] == [PUBLISHED[service]]


@pytest.mark.parametrize("service", list(RUN_AS))
def test_secrets_are_files_of_the_services_own_user(service: str) -> None:
    spec = SERVICES[service]
    held = spec.get("secrets", [])
    assert {s["target"] for s in held} == SECRET_TARGETS.get(service, set())
    user = RUN_AS[service][0]
    for secret in held:
        assert STACK["secrets"][secret["source"]] == {"external": True}
        assert secret["source"] == f"kernelhub_{secret['target']}"
        if user and not user.startswith("0:"):
            uid, gid = user.split(":")
            assert (secret["uid"], secret["gid"], secret["mode"]) == (uid, gid, 0o400)
        else:
            assert secret["mode"] & 0o222 == 0, f"{service}: {secret['target']} is writable"
    # the environment names files (*_FILE), never holds a password or token itself
    for name, value in spec.get("environment", {}).items():
        if re.search(r"PASSWORD|TOKEN|SECRET", name):
            assert name.endswith("_FILE"), f"{service}: {name} in the environment"
            assert str(value).startswith("/run/secrets/"), f"{service}: {name}={value}"
        assert not re.search(r"://[^/@]*:[^/@]*@", str(value)), f"{service}: {name} has a password"


def test_the_same_secrets_files_and_database_roles_as_the_compose_file() -> None:
    assert {f"kernelhub_{name}" for name in COMPOSE["secrets"]} == set(STACK["secrets"])
    for service in ("hub", "quotad", "postgres"):
        theirs = COMPOSE["services"][service]["environment"]
        ours = SERVICES[service]["environment"]
        for name, value in theirs.items():
            if name != "DOCKER_HOST":  # how each reaches its guard differs, below
                assert ours.get(name) == value, f"{service}: {name}"


def test_the_hub_is_a_swarm_hub_on_a_manager_behind_its_guard() -> None:
    hub, guard = SERVICES["hub"], SERVICES["docker-proxy"]
    assert "--runtimes=swarm" in hub["command"]
    assert hub["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    assert command_flag("docker-proxy", "--listen") == "0.0.0.0:2375"
    # the guard's network is the hub's and the guard's alone
    assert guard["networks"] == ["engine"]
    assert {s for s, spec in SERVICES.items() if "engine" in spec.get("networks", [])} == {
        "hub",
        "docker-proxy",
    }
    # one node label for both: the hub asks the engine of the node it runs on
    constraints = hub["deploy"]["placement"]["constraints"]
    assert "node.role == manager" in constraints
    assert constraints == guard["deploy"]["placement"]["constraints"]
    assert "hub-data:/srv/kernelhub" in hub["volumes"]


def test_every_node_has_a_read_only_guard_for_its_own_quota_daemon() -> None:
    """The daemon reaches only its own node's guard (a unix socket in a node-local
    volume), read-only; the guard's full API stays on its own loopback, on a network of its own."""
    listen = command_flag("node-guard", "--read-only-listen")
    assert listen.startswith("unix:/"), "a TCP listener would be reachable on a network"
    path = "/" + listen.removeprefix("unix:").lstrip("/")
    host = SERVICES["quotad"]["environment"]["DOCKER_HOST"]
    assert host == f"unix://{path}"
    assert command_flag("node-guard", "--listen").startswith("127.0.0.1:")
    # its group (the user's gid) and 660: the daemon's uid 10002 connects, nobody else
    assert command_flag("node-guard", "--unix-mode") == "660"
    assert SERVICES["node-guard"]["user"] == "0:10002" and RUN_AS["quotad"][0] == "10002:10002"
    assert SERVICES["node-guard"]["networks"] == ["node-guard"]
    assert STACK["networks"]["node-guard"] == {"driver": "overlay", "internal": True}
    joined = {s for s, spec in SERVICES.items() if "node-guard" in spec.get("networks", [])}
    assert joined == {"node-guard"}
    holders = {
        s: m.get("read_only", False)
        for s in SERVICES
        for m in mounts(s)
        if m["target"] == str(Path(path).parent)
    }
    assert holders == {"node-guard": False, "quotad": True, "runtime-firewall": True}
    volume = next(m["source"] for m in mounts("quotad") if m["target"] == str(Path(path).parent))
    assert STACK["volumes"][volume] == {}, "a node-local volume (the local driver)"


def test_every_node_firewalls_its_runtimes_and_the_hub_makes_them_wait_for_it() -> None:
    """Overlays bypass the host's chains: `lock-runtimes` firewalls each runtime inside
    its own namespace, the hub's ports open on the runtimes' network alone, and no
    runtime starts its server before (tests/test_swarm_quotad.py runs it on a swarm)."""
    firewall = SERVICES["runtime-firewall"]
    assert firewall["command"][:3] == ["kernelhub", "network", "lock-runtimes"]
    assert (
        command_flag("runtime-firewall", "--hub-network") == STACK["networks"]["runtimes"]["name"]
    )
    assert command_flag("runtime-firewall", "--hub-ports") == "8000,8081"
    assert command_flag("runtime-firewall", "--proc") == "/host/proc"
    assert not any(a.startswith("--hub=") for a in firewall["command"]), "the hub: one network"
    # the host's network (its addresses refused to runtimes), for this service alone
    assert firewall["networks"] == ["hostnet"]
    assert STACK["networks"]["hostnet"] == {"external": True, "name": "host"}
    joined = {s for s, spec in SERVICES.items() if "hostnet" in spec.get("networks", [])}
    assert joined == {"runtime-firewall"}
    assert (
        firewall["environment"]["DOCKER_HOST"] == SERVICES["quotad"]["environment"]["DOCKER_HOST"]
    )
    config = (ROOT / "images" / "hub" / "kernelhub_config.py").read_text()
    assert "c.SwarmRuntimeSpawner.await_network_lockdown = 60" in config


def test_the_quota_daemon_sees_the_host_processes_read_only_and_is_told_where() -> None:
    assert command_flag("quotad", "--proc") == "/host/proc"
    assert "--node-local" in SERVICES["quotad"]["command"]
    (tmp,) = [m for m in mounts("quotad") if m["type"] == "tmpfs"]
    assert tmp["target"] == "/tmp"
    assert SERVICES["quotad"]["networks"] == ["internal"]


def test_networks_internal_encrypted_and_the_runtimes_one_the_hub_config_names() -> None:
    networks = STACK["networks"]
    for name in ("internal", "engine"):
        assert networks[name]["internal"] is True
    for name in ("internal", "engine", "runtimes"):
        assert networks[name]["driver"] == "overlay"
        assert "encrypted" in networks[name]["driver_opts"]
        assert not networks[name].get("attachable", False)
    # one name, the same in the network, the hub's config and the hub's guard
    runtimes = networks["runtimes"]["name"]
    assert runtimes == "${KERNELHUB_RUNTIMES_NETWORK:-kernelhub-runtimes}"
    assert SERVICES["hub"]["environment"]["KERNELHUB_RUNTIMES_NETWORK"] == runtimes
    config = (ROOT / "images/hub/kernelhub_config.py").read_text()
    assert 'os.environ.get(\n    "KERNELHUB_RUNTIMES_NETWORK", "kernelhub-runtimes"\n)' in config
    assert command_flag("docker-proxy", "--network") == runtimes
    for service in ("postgres", "quotad"):
        assert SERVICES[service]["networks"] == ["internal"], "nothing beyond the overlay"


def test_every_image_is_one_kernelhub_builds_or_the_compose_files_postgres() -> None:
    for service, spec in SERVICES.items():
        image = spec["image"]
        if service == "postgres":
            default = COMPOSE["services"]["postgres"]["image"]
            assert image == f"${{KERNELHUB_POSTGRES_IMAGE:-{default}}}"
            continue
        # only the registry's own image is local to its node; the rest come from it
        name = image if service == "registry" else REGISTRY_VAR.sub("", image)
        assert name != image or service == "registry", f"{service}: {image} not pulled"
        match = re.fullmatch(r"kernelhub/([a-z-]+):latest", name)
        assert match, f"{service}: {image}"
        dockerfile = ROOT / "images" / match[1] / "Dockerfile"
        assert f"org.kernelhub.image={match[1]}" in dockerfile.read_text()


def test_the_header_gives_every_step_the_file_needs() -> None:
    header = STACK_FILE.read_text().split("\nx-kernelhub:")[0]
    for step in (
        "docker swarm init",
        "export KERNELHUB_DRIVE_ROOT=",
        "all_squash,anonuid=1000,anongid=1000",
        "docker secret create",
        "kernelhub images build registry",
        "docker push",
        "docker stack deploy --resolve-image never -c docker-stack.yml kernelhub",
        '"insecure-registries"',
        '"no-new-privileges": true',
    ):
        assert step in header, step
    labels = {
        c.split("==")[0].strip().removeprefix("node.labels.")
        for spec in SERVICES.values()
        for c in spec.get("deploy", {}).get("placement", {}).get("constraints", [])
        if c.startswith("node.labels.")
    }
    for label in labels:
        assert f"--label-add {label}=true" in header
    loop = re.search(
        r"for s in ([a-z_ ]+); do\n#\s+openssl rand -hex 32 \| docker secret create", header
    )
    assert loop, "the secrets' loop"
    assert {f"kernelhub_{s}" for s in loop[1].split()} == set(STACK["secrets"])


def test_the_docker_cli_loads_the_file_and_requires_the_registry() -> None:
    env = {**os.environ, "KERNELHUB_REGISTRY": "10.0.0.5:5000"}
    loaded = _stack_config(env)
    assert loaded.returncode == 0, loaded.stderr
    rendered = yaml.safe_load(loaded.stdout)["services"]
    assert rendered["quotad"]["image"] == "10.0.0.5:5000/kernelhub/hub:latest"
    assert rendered["hub"]["ports"][0]["published"] == 8000
    env.pop("KERNELHUB_REGISTRY")
    missing = _stack_config(env)
    assert missing.returncode != 0
    assert "KERNELHUB_REGISTRY" in missing.stderr


# KERNELHUB_DRIVE_ROOT: what the hub is told, what it mounts, and what its guard lets
# runtime services mount (unset: only their drive volumes, no bind at all)
DRIVE_MODES = [
    ("/srv/drives", "/srv/drives", ("/srv/drives", "/srv/drives"), "--drive-root=/srv/drives"),
    ("", "", ("/dev/null", "/dev/null"), "--drive-root="),  # empty or unset, the same
]


@pytest.mark.parametrize(("root", "told", "mounted", "guard"), DRIVE_MODES)
def test_the_drive_root_is_shared_when_set_and_node_local_drives_when_not(
    root: str, told: str, mounted: tuple[str, str], guard: str
) -> None:
    env = {**os.environ, "KERNELHUB_REGISTRY": "10.0.0.5:5000", "KERNELHUB_DRIVE_ROOT": root}
    loaded = _stack_config(env)
    assert loaded.returncode == 0, loaded.stderr
    rendered = yaml.safe_load(loaded.stdout)["services"]
    assert rendered["hub"]["environment"]["KERNELHUB_DRIVE_ROOT"] == told
    binds = [(m["source"], m["target"]) for m in rendered["hub"]["volumes"] if m["type"] == "bind"]
    assert binds == [mounted]
    assert guard in rendered["docker-proxy"]["command"]


# KERNELHUB_RUNTIME_TYPES_JSON, read by the hub's config file: the runtime types, or a
# start stopped with one line naming what is wrong (None: taken; "": unset, the defaults)
RUNTIME_TYPES_JSON = [
    ('[{"name": "cpu", "image": "kernelhub/runtime-test:latest", "mem_limit": "1G"}]', None),
    ("", None),
    ("[{'name': 'cpu'}]", "KERNELHUB_RUNTIME_TYPES_JSON is not JSON"),
    ('{"name": "cpu"}', "KERNELHUB_RUNTIME_TYPES_JSON must be a JSON list of runtime types"),
    ('[{"name": "CPU"}]', "runtime type #1 needs a 'name' of lowercase letters"),
    ('[{"name": "cpu", "gpu": 1}]', "runtime type #1 has unknown field(s) gpu"),
    ("[]", "at least one runtime type must be configured"),
]


@pytest.mark.parametrize(("value", "refusal"), RUNTIME_TYPES_JSON)
def test_the_hub_config_takes_runtime_types_from_the_environment_or_says_why_not(
    monkeypatch: pytest.MonkeyPatch, value: str, refusal: str | None
) -> None:
    from kernelhub.launcher.up import StartupError, load_config_file

    for name in ("KERNELHUB_DB_PASSWORD", "KERNELHUB_DB_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KERNELHUB_RUNTIME_TYPES_JSON", value)
    if refusal is None:
        catalog = load_config_file(HUB_CONFIG).RuntimeCatalog
        assert catalog.get("runtime_types") == (json.loads(value) if value else None)
        return
    with pytest.raises(StartupError) as refused:
        load_config_file(HUB_CONFIG)
    assert refusal in str(refused.value) and "\n" not in str(refused.value), refused.value


def _stack_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "stack", "config", "-c", str(STACK_FILE)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
