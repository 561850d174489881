"""Runtimes as Docker containers, against the real engine on this machine.

The runtime types name the small test image (`kernelhub images build test`). No
GPU exists here: the inventory is configured, and GPUs reach containers through
NVIDIA_VISIBLE_DEVICES ("env" mode) so GPU runtimes can start without a driver.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import docker
import httpx
import pytest
from harness import (
    KERNELHUB,
    HubProcess,
    docker_engine,
    server_path,
    start_runtime,
    stop_all_runtimes,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_IMAGE = "kernelhub/runtime-test:latest"
RUN_ID = secrets.token_hex(3)
PREFIX = f"khtest{RUN_ID}"
MISSING_IMAGE = f"kernelhub/runtime-never-built-{RUN_ID}:latest"
DOCKER_CONFIG = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{TEST_IMAGE}",
      "mem_limit": "1G", "cpu_limit": 1.0}},
    {{"name": "gpu", "display_name": "GPU", "image": "{TEST_IMAGE}", "gpus": 1,
      "mem_limit": "2G", "cpu_limit": 1.5}},
    {{"name": "big", "display_name": "Big", "image": "{MISSING_IMAGE}"}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
c.GpuInventory.devices = ["0", "1", "2", "3"]
c.DockerRuntimeSpawner.gpu_request_mode = "env"
c.DockerRuntimeSpawner.prefix = "{PREFIX}"
c.DockerRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.DockerRuntimeSpawner.site_snippets_volume = "{PREFIX}-site-snippets"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        yield client


@pytest.fixture(scope="module")
def docker_hub(engine: docker.DockerClient, hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(config_text=DOCKER_CONFIG, name="docker", runtimes="docker")


@pytest.fixture
def api(docker_hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    with docker_hub.api(docker_hub.token(username)) as client:
        yield client
        stop_all_runtimes(client, username)


def containers_of(engine: docker.DockerClient, user: str) -> list[Any]:
    return engine.containers.list(
        all=True, filters={"label": f"org.kernelhub.user={user}", "name": PREFIX}
    )


def test_the_hub_says_it_runs_docker_runtimes(docker_hub: HubProcess) -> None:
    assert "Runtimes: Docker containers" in docker_hub.log()


def test_a_cpu_runtime_is_a_container_with_its_types_limits_and_labels(
    docker_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    model = start_runtime(api, username, "", "cpu")

    assert api.get(f"{docker_hub.url}{model['url']}api/status").status_code == 200
    (container,) = containers_of(engine, username)
    assert container.name == f"{PREFIX}-{username}"
    assert container.image.tags == [TEST_IMAGE]
    assert container.attrs["Config"]["Cmd"][0] == "kernelhub-runtime"  # its launcher
    labels = container.labels
    assert labels["org.kernelhub.runtime-type"] == "cpu"
    assert labels["org.kernelhub.server"] == ""
    assert labels["org.kernelhub.gpus"] == ""
    assert labels["org.kernelhub.cpu-limit"] == "1"  # what the quota daemon judges CPU by
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 1024**3
    assert host["CpuQuota"] == 100_000
    assert host["AutoRemove"] is True
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/home/jovyan"]["Name"] == f"{PREFIX}-drive-{username}"
    site = mounts["/etc/kernelhub/snippets"]
    assert (site["Name"], site["RW"]) == (f"{PREFIX}-site-snippets", False)


SITE_SNIPPET = """---
title: Our cluster's shared datasets
category: Site
---

```python
print("datasets live in /data")
```
"""


def test_the_admins_site_snippets_reach_every_runtime_read_only(
    docker_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    # the admin fills the site volume (here through a throwaway container)
    engine.containers.run(
        TEST_IMAGE,
        ["sh", "-c", 'printf "%s" "$SNIPPET" > /site/shared-datasets.md'],
        environment={"SNIPPET": SITE_SNIPPET},
        volumes={f"{PREFIX}-site-snippets": {"bind": "/site", "mode": "rw"}},
        entrypoint=[],
        user="root",
        remove=True,
    )
    model = start_runtime(api, username, "", "cpu")

    listed = api.get(f"{docker_hub.url}{model['url']}kernelhub-snippets/snippets")
    assert listed.status_code == 200, listed.text
    site = [s for s in listed.json()["snippets"] if s["source"] == "site"]
    assert [(s["id"], s["title"]) for s in site] == [
        ("shared-datasets", "Our cluster's shared datasets")
    ]
    (container,) = containers_of(engine, username)
    written = container.exec_run(["sh", "-c", "touch /etc/kernelhub/snippets/x"])
    assert written.exit_code != 0 and b"Read-only" in written.output


def test_a_type_whose_image_is_not_built_is_shown_disabled_and_refused(
    engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    types = {t["name"]: t for t in api.get("kernelhub/runtime-types").json()["runtime_types"]}
    assert types["big"]["available"] is False
    assert types["big"]["reason"] == f"its image {MISSING_IMAGE} is not built on this host yet"
    assert types["cpu"]["available"] is True

    response = api.post(server_path(username, ""), json={"user_options": {"runtime": "big"}})
    assert response.status_code == 400
    assert "is not built on this host yet" in response.json()["message"]
    assert containers_of(engine, username) == []


def test_a_user_cannot_pick_an_image(
    api: httpx.Client, engine: docker.DockerClient, username: str
) -> None:
    response = api.post(
        server_path(username, ""), json={"user_options": {"runtime": "cpu", "image": "evil"}}
    )
    assert response.status_code == 400
    assert "unknown user option(s): image" in response.json()["message"]
    assert containers_of(engine, username) == []


def write_file(hub: HubProcess, api: httpx.Client, model: dict[str, Any], name: str) -> None:
    url = f"{hub.url}{model['url']}api/contents/{name}"
    saved = api.put(url, json={"type": "file", "format": "text", "content": name})
    assert saved.status_code in (200, 201), saved.text


def read_file(hub: HubProcess, api: httpx.Client, model: dict[str, Any], name: str) -> str:
    response = api.get(f"{hub.url}{model['url']}api/contents/{name}")
    assert response.status_code == 200, f"{name} is gone from the drive"
    return str(response.json()["content"])


def test_the_drive_outlives_stop_type_switch_and_container_removal(
    docker_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    first = start_runtime(api, username, "", "cpu")
    write_file(docker_hub, api, first, "notes.txt")
    stop_all_runtimes(api, username)
    wait_until(lambda: containers_of(engine, username) == [], what="container removal")

    switched = start_runtime(api, username, "", "gpu")
    assert read_file(docker_hub, api, switched, "notes.txt") == "notes.txt"
    (container,) = containers_of(engine, username)
    assert container.labels["org.kernelhub.runtime-type"] == "gpu"
    container.remove(force=True)  # a dead runtime: the drive must not care
    stop_all_runtimes(api, username)

    again = start_runtime(api, username, "exp1", "cpu")
    assert read_file(docker_hub, api, again, "notes.txt") == "notes.txt"
    assert engine.volumes.get(f"{PREFIX}-drive-{username}")


def test_concurrent_gpu_spawns_never_share_a_gpu(
    docker_hub: HubProcess, engine: docker.DockerClient
) -> None:
    users = [f"gpu{RUN_ID}{i}" for i in range(20)]
    clients = {user: docker_hub.api(docker_hub.token(user)) for user in users}

    def request(user: str) -> int:
        body = {"user_options": {"runtime": "gpu"}}
        return clients[user].post(server_path(user, ""), json=body).status_code

    try:
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            statuses = dict(zip(users, pool.map(request, users), strict=True))
        accepted = [u for u, status in statuses.items() if status in (201, 202)]
        assert all(status in (201, 202, 400) for status in statuses.values()), statuses

        def settled() -> bool:
            models = [clients[u].get(f"users/{u}").json()["servers"] for u in accepted]
            return all(not s or s[""]["pending"] is None for s in models)

        wait_until(settled, timeout=180, what="every accepted GPU spawn to finish")
        running = [u for u in accepted if clients[u].get(f"users/{u}").json()["servers"]]
        assert len(running) == 4
        containers = [containers_of(engine, u)[0] for u in running]
        gpus = [c.labels["org.kernelhub.gpus"] for c in containers]
        assert sorted(gpus) == ["0", "1", "2", "3"]
        for container in containers:  # host GPU n is the container's GPU 0
            env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
            assert env["NVIDIA_VISIBLE_DEVICES"] == container.labels["org.kernelhub.gpus"]
            assert env["CUDA_VISIBLE_DEVICES"] == "0"
        for user in set(users) - set(running):
            assert containers_of(engine, user) == []
    finally:
        for user, client in clients.items():
            stop_all_runtimes(client, user)
            client.close()


def test_a_gpu_request_with_no_free_gpu_is_refused_and_leaves_no_container(
    docker_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    holders = [f"hold{RUN_ID}{i}" for i in range(4)]
    clients = [docker_hub.api(docker_hub.token(user)) for user in holders]
    try:
        for user, client in zip(holders, clients, strict=True):
            start_runtime(client, user, "", "gpu")
        response = api.post(server_path(username, ""), json={"user_options": {"runtime": "gpu"}})
        assert response.status_code == 400
        assert "all GPUs are in use (4 of 4 taken)" in response.json()["message"]
        assert containers_of(engine, username) == []
        assert api.get(f"users/{username}").json()["servers"] == {}
    finally:
        for user, client in zip(holders, clients, strict=True):
            stop_all_runtimes(client, user)
            client.close()


def drive_files(engine: docker.DockerClient, volume: str) -> list[str]:
    listing = engine.containers.run(
        TEST_IMAGE,
        ["ls", "-A", "/drive"],
        volumes={volume: {"bind": "/drive", "mode": "ro"}},
        remove=True,
        user="root",
    )
    return listing.decode().split()


def test_an_uploaded_notebook_lands_on_the_drive(
    docker_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    model = start_runtime(api, username, "", "cpu")
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    uploaded = api.put(
        f"{docker_hub.url}{model['url']}api/contents/uploaded.ipynb",
        json={"type": "notebook", "format": "json", "content": notebook},
    )
    assert uploaded.status_code == 201, uploaded.text
    assert "uploaded.ipynb" in drive_files(engine, f"{PREFIX}-drive-{username}")


def run_kernelhub(*args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KERNELHUB, *args], input=answer, capture_output=True, text=True, timeout=60, check=False
    )


def test_only_the_admin_command_deletes_a_drive_and_only_after_asking(
    docker_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    volume = f"{PREFIX}-drive-{username}"
    start_runtime(api, username, "", "cpu")
    assert engine.volumes.get(volume).attrs["Labels"] == {"org.kernelhub.drive-of": username}

    declined = run_kernelhub("drive", "delete", username, answer="n\n")
    assert declined.returncode != 0
    assert "nothing deleted" in declined.stderr
    in_use = run_kernelhub("drive", "delete", username, "--yes")
    assert in_use.returncode != 0
    assert "stop those runtimes first" in in_use.stderr
    assert engine.volumes.get(volume)

    stop_all_runtimes(api, username)
    wait_until(lambda: containers_of(engine, username) == [], what="container removal")
    deleted = run_kernelhub("drive", "delete", username, answer="y\n")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(docker.errors.NotFound):
        engine.volumes.get(volume)


DEVICE_REQUEST_CONFIG = DOCKER_CONFIG.replace(
    'c.DockerRuntimeSpawner.gpu_request_mode = "env"',
    'c.DockerRuntimeSpawner.gpu_request_mode = "device-requests"',
)


def test_a_gpu_container_the_engine_cannot_start_leaves_nothing_and_frees_its_gpu(
    engine: docker.DockerClient, hub_factory: Callable[..., HubProcess]
) -> None:
    # this engine has no NVIDIA toolkit, so a device request for GPU 0 must fail
    hub = hub_factory(config_text=DEVICE_REQUEST_CONFIG, name="devreq", runtimes="docker")
    user = f"devreq{RUN_ID}"
    with hub.api(hub.token(user)) as api:
        response = api.post(server_path(user, ""), json={"user_options": {"runtime": "gpu"}})
        assert response.status_code in (201, 202)
        events = [
            json.loads(line[len("data:") :])
            for line in api.get(f"{server_path(user, '')}/progress").text.splitlines()
            if line.startswith("data:")
        ]
        assert events[-1]["failed"] is True
        assert "could not start" in events[-1]["message"]
        assert containers_of(engine, user) == []
        types = api.get("kernelhub/runtime-types").json()
        assert types["gpus"]["free"] == 4
