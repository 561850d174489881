"""The multi-node swarm harness itself (tests/swarm_cluster.py), on the real engine: the
host manages, worker engines run in (nearly) privileged containers, images travel through the
cluster's registry, and nothing is left behind.

The tests share one cluster, in file order; the last one abandons it as a crashed run
would, and checks that the next start clears it and that teardown removes everything,
on Ctrl-C too.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.models.services import Service
from docker.types import EndpointSpec, RestartPolicy
from harness import wait_until
from swarm_cluster import LABEL, Cluster, SwarmClusterError, swarm_cluster

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]

PREFIX = "khswt"
IMAGE = "kernelhub/runtime-test:latest"
SLEEP = ["python3", "-c", "import time; time.sleep(600)"]
TASK_TIMEOUT = 120.0  # the first task on a node pulls the image (440 MB) from the registry


@pytest.fixture(scope="module")
def host_before() -> dict[str, Any]:
    """What the host had before any cluster: its swarm state and docker_gwbridge."""
    client = docker.from_env()
    try:
        return {
            "swarm": client.info()["Swarm"]["LocalNodeState"],
            "gwbridge": bool(client.networks.list(names=["docker_gwbridge"])),
        }
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster(host_before: dict[str, Any]) -> Iterator[Cluster]:
    with ExitStack() as stack:
        built = stack.enter_context(swarm_cluster(PREFIX, workers=2, images=[IMAGE]))
        yield built
        # test_leftovers_of_a_crashed_run_are_cleared_and_teardown_leaves_nothing has
        # torn it down already: this second teardown must be a harmless no-op
    print(f"swarm harness timings (s): {built.timings}")  # shown with -s


def service(cluster: Cluster, name: str, node: str | None = None, **kwargs: Any) -> Service:
    """A labelled service of the sleeping test image, pinned to ``node`` if given."""
    constraints = [f"node.hostname=={node}"] if node else ["node.role==worker"]
    return cluster.manager.services.create(
        cluster.image(IMAGE),
        command=SLEEP,
        name=f"{PREFIX}-{name}",
        labels=cluster.labels(),
        constraints=constraints,
        init=True,  # a sleeping PID 1 ignores SIGTERM: stops would wait the grace period
        # replaced at once when stopped (a drained node's tasks are), the default after 5 s
        restart_policy=RestartPolicy(condition="any", delay=0),
        **kwargs,
    )


def running_nodes(service: Service) -> list[str]:
    """Node ids of the service's running tasks."""
    return [t["NodeID"] for t in service.tasks() if t.get("Status", {}).get("State") == "running"]


def wait_for(cluster: Cluster, predicate: Callable[[], Any], what: str, timeout: float) -> Any:
    """wait_until, with the cluster's nodes, tasks and logs in the failure."""
    try:
        return wait_until(predicate, timeout=timeout, interval=0.5, what=what)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{cluster.logs()}") from None


def test_every_worker_is_ready(cluster: Cluster) -> None:
    nodes = {n.attrs["Description"]["Hostname"]: n.attrs for n in cluster.manager.nodes.list()}
    assert sorted(nodes) == sorted(cluster.node_names)
    assert cluster.node_names[1:] == [f"{PREFIX}-worker-1", f"{PREFIX}-worker-2"]
    for worker in cluster.workers:
        assert nodes[worker.name]["Status"]["State"] == "ready"
        assert nodes[worker.name]["Spec"]["Role"] == "worker"
        assert nodes[worker.name]["Status"]["Addr"] == worker.ip
    assert nodes[cluster.manager_name]["Spec"]["Role"] == "manager"


def test_each_worker_runs_the_image_from_the_registry(cluster: Cluster) -> None:
    for worker in cluster.workers:  # empty engines: nobody `docker load`s anything
        assert cluster.worker_client(worker.index).images.list() == []
    services = {w.index: service(cluster, f"pin-{w.index}", node=w.name) for w in cluster.workers}
    for worker in cluster.workers:
        pinned, node_id = services[worker.index], worker.node_id
        wait_for(
            cluster,
            lambda: running_nodes(pinned) == [node_id],  # noqa: B023 - called right here
            f"the task pinned to {worker.name} to run there",
            TASK_TIMEOUT,
        )
        # the digest pushed from the host is what the worker pulled, under both names
        pulled = cluster.worker_client(worker.index).images.get(cluster.image(IMAGE))
        repository = cluster.image(IMAGE).rsplit(":", 1)[0]
        assert f"{repository}@{cluster.digests[IMAGE]}" in pulled.attrs["RepoDigests"]
    on_network = cluster.image(IMAGE).replace(cluster.registry, cluster.registry_on_network)
    same = cluster.worker_client(1).images.pull(on_network)
    assert same.id == pulled.id
    for s in services.values():
        s.remove()


def test_a_port_published_in_host_mode_on_a_worker_is_reached_from_the_host(
    cluster: Cluster,
) -> None:
    worker = cluster.worker(2)
    web = cluster.manager.services.create(
        cluster.image(IMAGE),
        command=["python3", "-m", "http.server", "8888", "--directory", "/tmp"],
        name=f"{PREFIX}-web",
        labels=cluster.labels(),
        constraints=[f"node.hostname=={worker.name}"],
        init=True,
        endpoint_spec=EndpointSpec(ports={8888: (8888, "tcp", "host")}),
    )

    def answers() -> bool:
        with suppress(httpx.HTTPError):
            return httpx.get(f"http://{worker.ip}:8888/", timeout=2).status_code == 200
        return False

    wait_for(cluster, answers, f"http://{worker.ip}:8888/ from the host", TASK_TIMEOUT)
    web.remove()


def test_a_worker_that_joins_late_runs_the_image_too(cluster: Cluster) -> None:
    late = cluster.add_worker()
    assert late.name == f"{PREFIX}-worker-3"
    assert cluster.node(late.name).attrs["Status"]["State"] == "ready"
    assert cluster.worker_client(late.index).images.list() == []
    pinned = service(cluster, "late", node=late.name)
    wait_for(
        cluster,
        lambda: running_nodes(pinned) == [late.node_id],
        f"the task pinned to {late.name} to run there",
        TASK_TIMEOUT,
    )
    pinned.remove()


def test_draining_a_node_moves_its_replicas_and_stops_its_pinned_tasks(cluster: Cluster) -> None:
    free = service(cluster, "free")  # any worker
    where = wait_for(cluster, lambda: running_nodes(free), "the free task to run", TASK_TIMEOUT)
    drained = cluster.node(where[0]).attrs["Description"]["Hostname"]
    pinned = service(cluster, "stuck", node=drained)
    wait_for(cluster, lambda: running_nodes(pinned), "the pinned task to run", TASK_TIMEOUT)
    cluster.drain(drained)
    try:
        moved = wait_for(
            cluster,
            lambda: [n for n in running_nodes(free) if n != where[0]],
            f"the free task to leave {drained}",
            TASK_TIMEOUT,
        )
        assert moved and where[0] not in running_nodes(free)
        wait_for(cluster, lambda: not running_nodes(pinned), "the pinned task to stop", 60)
        states = [t["Status"]["State"] for t in pinned.tasks()]
        assert "pending" in states, states  # nowhere else to go: it waits, not runs
    finally:
        cluster.activate(drained)
        free.remove()
        pinned.remove()


def test_a_host_in_another_swarm_is_refused_untouched(cluster: Cluster) -> None:
    before = cluster.manager.swarm.attrs["ID"]
    with pytest.raises(SwarmClusterError, match="already in a swarm"), swarm_cluster("khswo"):
        pass
    cluster.manager.swarm.reload()
    assert cluster.manager.swarm.attrs["ID"] == before
    assert len(cluster.manager.nodes.list()) == 1 + len(cluster.workers)


def leftovers(client: docker.DockerClient) -> list[str]:
    label = {"label": f"{LABEL}={PREFIX}"}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=label)]
    tag = re.compile(rf"127\.0\.0\.1:\d+/{PREFIX}/")
    found += [f"tag {t}" for i in client.images.list() for t in i.tags if tag.match(t)]
    found += [str(p) for p in Path(tempfile.gettempdir()).glob(f"kernelhub-swarm-{PREFIX}-*")]
    return found


def test_leftovers_of_a_crashed_run_are_cleared_and_teardown_leaves_nothing(
    cluster: Cluster, host_before: dict[str, Any]
) -> None:
    # the module's cluster is abandoned as a killed run would leave it: the next start
    # with the same prefix clears it; then Ctrl-C inside the new one tears all down
    crashed = {w.name for w in cluster.workers}
    with pytest.raises(KeyboardInterrupt), swarm_cluster(PREFIX, workers=1) as again:
        names = {c.name for c in again.manager.containers.list(all=True)}
        assert not crashed & (names - {again.workers[0].name})
        assert again.node_names[1:] == [f"{PREFIX}-worker-1"]
        raise KeyboardInterrupt
    client = docker.from_env()
    try:
        assert leftovers(client) == []
        assert client.info()["Swarm"]["LocalNodeState"] == host_before["swarm"]
        gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
        assert gwbridge == host_before["gwbridge"]
    finally:
        client.close()
