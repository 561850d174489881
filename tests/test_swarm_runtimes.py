"""Runtimes as Swarm services on a real multi-node swarm (tests/swarm_cluster.py).

A real hub on the host (the swarm's manager) runs SwarmRuntimeSpawner; its runtimes
are services of the test image, pulled from the cluster's registry by worker engines
that never had it. The hub reaches each runtime at the node that runs it.
"""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from harness import (
    KERNELHUB,
    HubProcess,
    start_runtime,
    stop_all_runtimes,
    wait_ready,
    wait_until,
)
from swarm_cluster import Cluster, no_swarm_running, swarm_cluster

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]

PREFIX = "khswr"
IMAGE = "kernelhub/runtime-test:latest"
LABEL_USER = "org.kernelhub.user"


def refused_start(args: list[str]) -> list[str]:
    """`kernelhub up --runtimes swarm ARGS`, which must refuse to start without a
    traceback; the non-blank lines it wrote to stderr."""
    result = subprocess.run(
        [KERNELHUB, "up", "--runtimes", "swarm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_runtimes_swarm_without_a_swarm_is_one_clear_line(tmp_path: Path) -> None:
    # first in this file: it runs before the module's cluster makes the host a manager,
    # and while no other run (a benchmark, another pytest) has a swarm here
    with no_swarm_running():
        assert docker.from_env().info()["Swarm"]["LocalNodeState"] == "inactive"
        lines = refused_start(["--data-dir", str(tmp_path / "data")])
    assert lines == [
        "Error: --runtimes swarm: the Docker engine manages no swarm (`docker swarm init` "
        "makes one)"
    ], lines


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with swarm_cluster(PREFIX, workers=2, images=[IMAGE], prepull=True, shared_dir=True) as built:
        yield built


@pytest.mark.parametrize(
    ("drive_root", "says"),
    [
        ("/nonexistent/kernelhub-drives", "is not a folder on this hub: mount the cluster's"),
        ("drives", "drive_root 'drives' must be an absolute path"),
        ("/srv/../etc", "must not contain '.' or '..'"),
    ],
)
def test_a_bad_shared_drive_root_is_refused_at_start_in_one_line(
    cluster: Cluster, tmp_path: Path, drive_root: str, says: str
) -> None:
    config = tmp_path / "kernelhub_config.py"
    config.write_text(f"c.SwarmRuntimeSpawner.drive_root = {drive_root!r}\n")
    lines = refused_start(["--data-dir", str(tmp_path / "data"), "--config", str(config)])
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], lines


@pytest.fixture(scope="module")
def hub(cluster: Cluster, hub_factory: Callable[..., HubProcess]) -> HubProcess:
    config = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{cluster.image(IMAGE)}",
      "mem_limit": "512M", "cpu_limit": 0.5}},
    {{"name": "gpu", "display_name": "GPU", "image": "{cluster.image(IMAGE)}", "gpus": 1,
      "mem_limit": "512M", "cpu_limit": 0.5}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
# each worker's GPUs, as a per-node agent would report them (no GPU exists here)
c.GpuInventory.nodes = {{"{PREFIX}-worker-1": ["0", "1"], "{PREFIX}-worker-2": ["0", "1"]}}
c.SwarmRuntimeSpawner.prefix = "{PREFIX}"
c.SwarmRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.SwarmRuntimeSpawner.site_snippets_volume = ""
# the cluster's shared filesystem, mounted at the same path on every node and the hub
c.SwarmRuntimeSpawner.drive_root = "{cluster.shared_dir}"
c.Spawner.start_timeout = 180
c.Spawner.poll_interval = 5  # notice a runtime its node lost within seconds
c.Spawner.http_timeout = 120
"""
    return hub_factory(config_text=config, name="swarm", runtimes="swarm", quotas=False)


def test_the_hub_says_it_runs_swarm_services_and_listens_where_nodes_reach_it(
    hub: HubProcess, cluster: Cluster
) -> None:
    log = hub.log()
    assert "Runtimes: Docker Swarm services (the Docker engine manages a swarm of 3" in log
    assert f"{cluster.gateway}:8081" in log or f"http://{cluster.gateway}:" in log


def services_of(manager: docker.DockerClient, user: str) -> list[docker.models.services.Service]:
    return manager.services.list(filters={"label": f"{LABEL_USER}={user}"})


def node_of(manager: docker.DockerClient, user: str) -> str:
    (svc,) = services_of(manager, user)
    (task,) = [t for t in svc.tasks() if t["DesiredState"] == "running"]
    return str(manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"])


def test_runtimes_spawned_together_spread_over_the_nodes_and_answer_through_the_proxy(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    users = [f"{username}s{i}" for i in range(6)]
    clients = {user: hub.api(hub.token(user)) for user in users}
    try:
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            started = pool.map(lambda u: start_runtime(clients[u], u, "", "cpu"), users)
            models = dict(zip(users, started, strict=True))
        nodes = {user: node_of(cluster.manager, user) for user in users}
        for user, model in models.items():
            status = clients[user].get(f"{hub.url}{model['url']}api/status")
            assert status.status_code == 200, (user, nodes[user], status.text[:200])
        print(f"runtimes per node: {sorted(nodes.values())}")
        assert len(set(nodes.values())) >= 2, nodes  # spread, not all on one node
        (svc,) = services_of(cluster.manager, users[0])
        spec = svc.attrs["Spec"]["TaskTemplate"]
        assert spec["ContainerSpec"]["Image"].startswith(cluster.registry)
        assert spec["Resources"]["Limits"]["MemoryBytes"] == 512 * 1024**2
        assert spec["ContainerSpec"].get("CapabilityDrop") == ["ALL"]
        assert spec["Resources"]["Limits"]["Pids"] > 0  # a fork bomb stops in its runtime
    finally:
        for user, client in clients.items():
            stop_all_runtimes(client, user)
            client.close()
    wait_until(
        lambda: not any(services_of(cluster.manager, u) for u in users),
        timeout=60,
        what="every runtime's service removed",
    )


def test_a_refused_spawn_creates_no_service(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    with hub.api(hub.token(username)) as api:
        response = api.post(f"users/{username}/server", json={"user_options": {"runtime": "tpu"}})
        assert response.status_code == 400
        assert "tpu" in response.json()["message"]
    assert services_of(cluster.manager, username) == []


def test_a_runtime_stopped_from_the_hub_leaves_no_service(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    with hub.api(hub.token(username)) as api:
        start_runtime(api, username, "", "cpu")
        assert len(services_of(cluster.manager, username)) == 1
        stop_all_runtimes(api, username)
    wait_until(
        lambda: not services_of(cluster.manager, username), timeout=60, what="the service removed"
    )
    assert not httpx.get(f"{hub.url}/user/{username}/api/status", follow_redirects=False).is_success


def test_concurrent_gpu_requests_never_share_a_gpu_anywhere_and_refusals_leave_nothing(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    users = [f"{username}g{i}" for i in range(20)]
    clients = {user: hub.api(hub.token(user)) for user in users}

    def request(user: str) -> int:
        body = {"user_options": {"runtime": "gpu"}}
        return clients[user].post(f"users/{user}/server", json=body).status_code

    try:
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            statuses = dict(zip(users, pool.map(request, users), strict=True))
        assert all(status in (201, 202, 400) for status in statuses.values()), statuses

        def settled() -> bool:
            models = [clients[u].get(f"users/{u}").json()["servers"] for u in users]
            return all(not s or s[""]["pending"] is None for s in models)

        wait_until(settled, timeout=180, what="every accepted GPU spawn to finish")
        running = [u for u in users if clients[u].get(f"users/{u}").json()["servers"]]
        assert len(running) == 4
        held = []
        for user in running:
            (svc,) = services_of(cluster.manager, user)
            spec = svc.attrs["Spec"]["TaskTemplate"]
            env = dict(e.split("=", 1) for e in spec["ContainerSpec"]["Env"])
            (constraint,) = spec["Placement"]["Constraints"]
            node = constraint.removeprefix("node.hostname==")
            assert node_of(cluster.manager, user) == node  # pinned where its GPU is
            held.append((node, env["NVIDIA_VISIBLE_DEVICES"]))
        assert sorted(held) == [(f"{PREFIX}-worker-{n}", gpu) for n in (1, 2) for gpu in ("0", "1")]
        for user in set(users) - set(running):
            assert services_of(cluster.manager, user) == []
    finally:
        for user, client in clients.items():
            stop_all_runtimes(client, user)
            client.close()


def test_a_hub_restart_adopts_running_runtimes_with_their_gpu_placements(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    token = hub.token(username)
    with hub.api(token) as api:
        model = start_runtime(api, username, "", "gpu")
        (before,) = services_of(cluster.manager, username)
        node = node_of(cluster.manager, username)
        try:
            assert hub.stop(signal.SIGTERM) == 0  # a restart leaves runtimes running
            hub.start()
            assert api.get(f"users/{username}").json()["servers"][""]["ready"] is True
            assert api.get(f"{hub.url}{model['url']}api/status").status_code == 200
            (after,) = services_of(cluster.manager, username)
            assert after.id == before.id and node_of(cluster.manager, username) == node
            # its GPU is still held: the other three GPUs go, a fifth request is refused
            others = [f"{username}o{i}" for i in range(4)]
            answers = {}
            for other in others:
                with hub.api(hub.token(other)) as other_api:
                    answers[other] = other_api.post(
                        f"users/{other}/server", json={"user_options": {"runtime": "gpu"}}
                    ).status_code
                    if answers[other] in (201, 202):
                        wait_ready(other_api, other)
            refused = [u for u, status in answers.items() if status == 400]
            assert len(refused) == 1 and set(answers.values()) <= {201, 202, 400}, answers
        finally:
            for other in [username, *[f"{username}o{i}" for i in range(4)]]:
                with hub.api(hub.token(other)) as other_api:
                    stop_all_runtimes(other_api, other)


def test_a_runtime_on_a_drained_node_is_stopped_and_the_hub_says_so(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    with hub.api(hub.token(username)) as api:
        start_runtime(api, username, "", "gpu")  # pinned to its GPU's node
        node = node_of(cluster.manager, username)
        cluster.drain(node)
        try:
            wait_until(
                lambda: not api.get(f"users/{username}").json()["servers"],
                timeout=90,
                what="the hub to notice the runtime of the drained node stopped",
            )
            wait_until(  # nothing left behind
                lambda: not services_of(cluster.manager, username),
                timeout=60,
                what="the drained runtime's service removed",
            )
        finally:
            cluster.activate(node)
            stop_all_runtimes(api, username)


def read_file(api: httpx.Client, hub: HubProcess, model: dict[str, Any], path: str) -> str | None:
    response = api.get(f"{hub.url}{model['url']}api/contents/{path}", params={"content": "1"})
    return str(response.json()["content"]) if response.status_code == 200 else None


def test_a_users_drive_follows_them_to_a_runtime_on_another_node(
    hub: HubProcess, cluster: Cluster, username: str
) -> None:
    other = f"{username}x"
    with hub.api(hub.token(username)) as api, hub.api(hub.token(other)) as other_api:
        model = start_runtime(api, username, "", "cpu")
        first_node = node_of(cluster.manager, username)
        body = {"type": "file", "format": "text", "content": f"written on {first_node}"}
        put = api.put(f"{hub.url}{model['url']}api/contents/notes.txt", json=body)
        assert put.status_code in (200, 201), put.text[:300]
        stop_all_runtimes(api, username)
        wait_until(
            lambda: not services_of(cluster.manager, username), timeout=60, what="service removed"
        )
        cluster.drain(first_node)  # the next runtime cannot run where the file was written
        try:
            model = start_runtime(api, username, "", "cpu")
            second_node = node_of(cluster.manager, username)
            other_model = start_runtime(other_api, other, "", "cpu")
        finally:
            cluster.activate(first_node)
        try:
            assert second_node != first_node
            assert read_file(api, hub, model, "notes.txt") == f"written on {first_node}"
            # another user's runtime has a drive of its own, without the file
            assert read_file(other_api, hub, other_model, "notes.txt") is None
            # the folder on the shared filesystem belongs to the runtime's user alone
            folder = Path(cluster.shared_dir) / f"{PREFIX}-drive-{username}"
            info = folder.stat()
            assert (info.st_uid, oct(info.st_mode & 0o777)) == (1000, "0o700")
            (svc,) = services_of(cluster.manager, username)
            (mount,) = [
                m
                for m in svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"]
                if m["Target"] == "/home/jovyan"
            ]
            assert (mount["Type"], mount["Source"]) == ("bind", str(folder))
        finally:
            stop_all_runtimes(api, username)
            stop_all_runtimes(other_api, other)


def refusal(api: httpx.Client, user: str, runtime: str) -> str:
    """Ask for a runtime that must be refused; the refusal's message (the REST answer's,
    or the progress stream's where the refusal comes once the spawn runs)."""
    response = api.post(f"users/{user}/server", json={"user_options": {"runtime": runtime}})
    if response.status_code == 400:
        return str(response.json()["message"])
    assert response.status_code == 202, response.text[:300]
    progress = api.get(f"users/{user}/server/progress", timeout=60).text
    wait_until(
        lambda: not api.get(f"users/{user}").json()["servers"],
        timeout=30,
        what=f"{user}'s refused spawn to end",
    )
    return progress


def test_node_local_drives_pin_runtimes_and_their_gpus_to_the_drive_node(
    cluster: Cluster, hub_factory: Callable[..., HubProcess], username: str
) -> None:
    config = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{cluster.image(IMAGE)}",
      "mem_limit": "512M", "cpu_limit": 0.5}},
    {{"name": "gpu", "display_name": "GPU", "image": "{cluster.image(IMAGE)}", "gpus": 1,
      "mem_limit": "512M", "cpu_limit": 0.5}},
]
# GPUs on the workers only; drives node-local (no drive_root): on the manager
c.GpuInventory.nodes = {{"{PREFIX}-worker-1": ["0"], "{PREFIX}-worker-2": ["0"]}}
c.SwarmRuntimeSpawner.prefix = "{PREFIX}"
c.SwarmRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.SwarmRuntimeSpawner.site_snippets_volume = ""
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
"""
    local = hub_factory(config_text=config, name="swarm-local", runtimes="swarm", quotas=False)
    gpu_user = f"{username}g"
    with local.api(local.token(username)) as api, local.api(local.token(gpu_user)) as gpu_api:
        try:
            start_runtime(api, username, "", "cpu")
            assert node_of(cluster.manager, username) == cluster.manager_name
            (svc,) = services_of(cluster.manager, username)
            placement = svc.attrs["Spec"]["TaskTemplate"]["Placement"]
            assert placement["Constraints"] == [f"node.hostname=={cluster.manager_name}"]
            # the drive's node has no GPU: refused with the reason, nothing created
            message = refusal(gpu_api, gpu_user, "gpu")
            assert f"your drive is on node {cluster.manager_name}" in message, message
            assert services_of(cluster.manager, gpu_user) == []
            # the drive's node drained: refused at once, not pending until the timeout
            stop_all_runtimes(api, username)
            cluster.drain(cluster.manager_name)
            try:
                message = refusal(api, username, "cpu")
                assert f"node {cluster.manager_name} (your drive is there)" in message, message
                assert "which is drain now" in message, message
                assert services_of(cluster.manager, username) == []
            finally:
                cluster.activate(cluster.manager_name)
        finally:
            stop_all_runtimes(api, username)
            stop_all_runtimes(gpu_api, gpu_user)
