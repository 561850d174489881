"""A Docker runtime is a locked-down container its user cannot turn against the server.

Every attack runs where an attacker's code runs: in a notebook kernel of a real
runtime container (test image), started by a real hub through the real engine.
The user fully controls the container's processes and their drive; they must still
hold no capability, gain no privilege, stay within their process limit, keep /tmp
to themselves, and leave the server's installation and HTTP behaviour alone.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import docker
import httpx
import pytest
from harness import HubProcess, docker_engine, start_runtime, stop_all_runtimes, tiny_wheel
from kernels import RuntimeClient, assert_server_not_rewritten, plant_server_rewrites

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_IMAGE = "kernelhub/runtime-test:latest"
PREFIX = f"khsec{secrets.token_hex(3)}"
PIDS_LIMIT = 128
CONFIG = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{TEST_IMAGE}",
      "mem_limit": "1G", "cpu_limit": 1.0}},
]
c.DockerRuntimeSpawner.prefix = "{PREFIX}"
c.DockerRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.DockerRuntimeSpawner.site_snippets_volume = ""
c.DockerRuntimeSpawner.pids_limit = {PIDS_LIMIT}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        yield client


@pytest.fixture(scope="module")
def hub(engine: docker.DockerClient, hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(config_text=CONFIG, name="security-containers", runtimes="docker")


def runtime(hub: HubProcess, user: str) -> RuntimeClient:
    token = hub.token(user)
    with hub.api(token) as api:
        model = api.get(f"users/{user}").json()["servers"].get("")
        if not (model and model["ready"]):
            start_runtime(api, user)
    return RuntimeClient.of(hub.url, user, "", token)


def running(hub: HubProcess, user: str) -> Iterator[RuntimeClient]:
    yield runtime(hub, user)
    with hub.api(hub.token(user)) as api:
        stop_all_runtimes(api, user)


@pytest.fixture(scope="module")
def alice(hub: HubProcess) -> Iterator[RuntimeClient]:
    yield from running(hub, "alice")


@pytest.fixture(scope="module")
def bob(hub: HubProcess) -> Iterator[RuntimeClient]:
    yield from running(hub, "bob")


def container_of(engine: docker.DockerClient, user: str) -> Any:
    (container,) = engine.containers.list(filters={"label": f"org.kernelhub.user={user}"})
    return container


# ---- capabilities and privileges ------------------------------------------------------


def test_runtime_code_holds_no_capability_and_cannot_gain_privileges(
    alice: RuntimeClient, engine: docker.DockerClient
) -> None:
    status = alice.run("print(open('/proc/self/status').read())").ok()
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(rf"{field}:\s+0+\n", status), f"{field} is not empty:\n{status}"
    assert re.search(r"NoNewPrivs:\s+1\n", status)
    host = container_of(engine, "alice").attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not host["Privileged"]


def test_runtime_code_is_not_root_and_cannot_become_root(alice: RuntimeClient) -> None:
    ids = alice.run("import os; print(os.getuid(), os.geteuid(), os.getgid())").ok().split()
    assert "0" not in ids
    # with no capability and no_new_privs, even a setuid binary would not help; and
    # setuid(0) itself is refused
    attempt = alice.run(
        "import os\ntry:\n    os.setuid(0)\nexcept OSError as e:\n    print(e.errno)"
    )
    assert attempt.ok().strip() == "1"  # EPERM


# ---- process limit --------------------------------------------------------------------

FORK_UNTIL_REFUSED = f"""
import os, signal, time
children = []
refused = None
for _ in range({PIDS_LIMIT * 2}):
    try:
        pid = os.fork()
    except OSError as e:
        refused = e.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print(len(children), refused)
"""


def test_a_fork_bomb_stops_at_the_containers_process_limit(
    alice: RuntimeClient, bob: RuntimeClient, hub: HubProcess, engine: docker.DockerClient
) -> None:
    assert container_of(engine, "alice").attrs["HostConfig"]["PidsLimit"] == PIDS_LIMIT
    forked, refused = alice.run(FORK_UNTIL_REFUSED, timeout=120).ok().split()
    assert int(forked) < PIDS_LIMIT and refused == "11"  # EAGAIN at the limit
    # the host and the others carry on, and alice's runtime recovers once they are gone
    assert httpx.get(hub.url + "/hub/health", timeout=10).status_code == 200
    assert bob.run("print('bob fine')").ok().strip() == "bob fine"
    assert alice.run("print('alice fine')").ok().strip() == "alice fine"


# ---- private /tmp ---------------------------------------------------------------------


def test_each_runtime_has_a_private_tmp_in_memory(alice: RuntimeClient, bob: RuntimeClient) -> None:
    mounts = alice.run("print(open('/proc/self/mounts').read())").ok()
    tmp = [line.split() for line in mounts.splitlines() if line.split()[1:2] == ["/tmp"]]
    assert tmp and tmp[-1][2] == "tmpfs", mounts
    assert {"nosuid", "nodev"} <= set(tmp[-1][3].split(","))
    marker = secrets.token_hex(8)
    alice.run(f"open('/tmp/{marker}', 'w').write('alice')").ok()
    listing = bob.run("import os; print(os.listdir('/tmp'))").ok()
    assert marker not in listing


# ---- the server's installation and configuration --------------------------------------

REWRITE_THE_SERVER = """
import os, jupyter_server, jupyterhub, shutil
targets = [
    os.path.join(os.path.dirname(jupyter_server.__file__), "serverapp.py"),
    os.path.join(os.path.dirname(jupyterhub.__file__), "singleuser", "extension.py"),
    shutil.which("kernelhub-runtime"),
    os.path.join(os.path.dirname(jupyter_server.__file__), "kernelhub_was_here.py"),
]
for target in targets:
    try:
        with open(target, "a") as f:
            f.write("# rewritten")
        print("WROTE", target)
    except OSError as e:
        print("refused", e.errno)
"""


def test_the_server_installation_is_not_writable_by_its_user(alice: RuntimeClient) -> None:
    output = alice.run(REWRITE_THE_SERVER).ok()
    assert "WROTE" not in output, output
    assert output.count("refused 13") == 4  # EACCES, for each


@pytest.mark.parametrize("image", [TEST_IMAGE, "kernelhub/runtime-cpu:latest"])
def test_no_runtime_image_lets_its_user_rewrite_the_server(
    engine: docker.DockerClient, image: str
) -> None:
    # as the image's own user (jovyan), the way every runtime of it runs
    output = engine.containers.run(
        image, ["python3", "-c", REWRITE_THE_SERVER], remove=True, network_mode="none"
    ).decode()
    assert "WROTE" not in output and output.count("refused 13") == 4, output


RUNTIME_IMAGES = [TEST_IMAGE, "kernelhub/runtime-cpu:latest", "kernelhub/runtime-gpu:latest"]


@pytest.mark.parametrize("image", RUNTIME_IMAGES)
def test_no_runtime_image_has_a_setuid_or_setgid_program(
    engine: docker.DockerClient, image: str
) -> None:
    # Swarm services cannot set no-new-privileges (Engine API 1.41): a setuid program
    # (passwd, mount, newgrp...) would then give a runtime's user root's files
    found = engine.containers.run(
        image,
        ["find", "/", "-xdev", "-perm", "/6000", "-type", "f"],
        entrypoint=[],
        user="root",
        remove=True,
        network_mode="none",
    ).decode()
    assert found.split() == [], found


def restart(hub: HubProcess, user: str) -> RuntimeClient:
    with hub.api(hub.token(user)) as api:
        stop_all_runtimes(api, user)
    return runtime(hub, user)


def test_user_config_and_user_site_packages_cannot_change_the_server(
    hub: HubProcess, alice: RuntimeClient
) -> None:
    plant_server_rewrites(alice)
    assert_server_not_rewritten(restart(hub, "alice"))  # the drive keeps both files


def test_pip_install_lands_on_the_users_drive(hub: HubProcess, alice: RuntimeClient) -> None:
    name, data = tiny_wheel("khprobe", "VALUE = 42\n")
    wheel = base64.b64encode(data).decode()
    install = (
        runtime(hub, "alice")
        .run(  # today's server (restarted above)
            "import base64, os, subprocess, sys\n"
            f"path = os.path.expanduser('~/' + {name!r})\n"
            f"open(path, 'wb').write(base64.b64decode('{wheel}'))\n"
            "done = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index',\n"
            "    '--disable-pip-version-check', path], capture_output=True, text=True)\n"
            "print(done.returncode, done.stderr[-500:])",
            timeout=120,
        )
        .ok()
    )
    assert install.startswith("0"), install  # plain `pip install`: pip.conf puts it in ~/.local
    restarted = restart(hub, "alice")  # on the drive: it survives the container
    where = restarted.run("import khprobe, os; print(khprobe.VALUE, khprobe.__file__)").ok()
    value, path = where.split()
    assert value == "42" and path.startswith("/home/jovyan/.local/")
