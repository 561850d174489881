"""Warm runtimes: a signed-in user's next runtime is made before they press Start.

A real hub (`kernelhub up --runtimes docker`, its quota daemon and quota store), real
containers from the small test image, users signed in through the login form. No GPU
exists here: the inventory is configured and GPUs reach containers through
NVIDIA_VISIBLE_DEVICES ("env" mode), as in tests/test_docker_runtimes.py.

The rules, each shown below on the real engine:
- a home-page visit makes one, with the user's drive, labels and type's limits, holding
  no token, no GPU and counted by nothing; Start claims it;
- it is only ever its own user's: another user's spawn never gets it, nobody without
  its secret can activate it, and its server's cookies stay on its own path;
- a spawn refused by quotas removes it; a quota that would refuse prevents it;
- a spawn for another type (other limits, GPUs) never claims it: it is removed;
- types with GPUs are never prepared;
- it is removed when unused, and when the hub stops.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from harness import (
    HubProcess,
    docker_engine,
    server_path,
    sign_in,
    start_runtime,
    stop_all_runtimes,
    wait_until,
)

from kernelhub.quotas.policy import Rule
from kernelhub.quotas.store import QuotaStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_IMAGE = "kernelhub/runtime-test:latest"
RUN_ID = secrets.token_hex(3)
PREFIX = f"khwarm{RUN_ID}"
WARM_LABEL = "org.kernelhub.warm"
IDLE_TIMEOUT_S = 30
CONFIG = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{TEST_IMAGE}",
      "mem_limit": "1G", "cpu_limit": 1.0}},
    {{"name": "small", "display_name": "Small CPU", "image": "{TEST_IMAGE}",
      "mem_limit": "512M", "cpu_limit": 0.5}},
    {{"name": "gpu", "display_name": "GPU", "image": "{TEST_IMAGE}", "gpus": 1,
      "mem_limit": "1G", "cpu_limit": 1.0}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
c.GpuInventory.devices = ["0", "1"]
c.DockerRuntimeSpawner.gpu_request_mode = "env"
c.DockerRuntimeSpawner.prefix = "{PREFIX}"
c.DockerRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.DockerRuntimeSpawner.site_snippets_volume = ""
c.DockerRuntimeSpawner.warm_runtimes = True
c.DockerRuntimeSpawner.warm_runtimes_max = 3
c.DockerRuntimeSpawner.warm_runtime_idle_timeout = {IDLE_TIMEOUT_S}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        yield client


@pytest.fixture(scope="module")
def warm_hub(engine: docker.DockerClient, hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(CONFIG, name="warm", runtimes="docker", quotas=True)


@pytest.fixture
def store(warm_hub: HubProcess) -> Iterator[QuotaStore]:
    url = f"sqlite:///{warm_hub.data_dir / 'quotas.sqlite'}"
    wait_until(lambda: (warm_hub.data_dir / "quotas.sqlite").exists(), what="the quota store")
    with QuotaStore.open(url) as opened:
        yield opened


@pytest.fixture
def api(warm_hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    with warm_hub.api(warm_hub.token(username)) as client:
        yield client
        stop_all_runtimes(client, username)


def visit_home(hub: HubProcess, user: str) -> None:
    session = sign_in(hub, user, hub.password(user))
    try:
        assert session.get("/hub/home").status_code == 200
    finally:
        session.close()


def container_of(engine: docker.DockerClient, user: str) -> Any | None:
    try:
        found = engine.containers.list(all=True, filters={"name": f"^/{PREFIX}-{user}$"})
    except docker.errors.NotFound:
        return None  # listed, then removed before the SDK inspected it
    return found[0] if found else None


def warm_container(engine: docker.DockerClient, user: str, timeout: float = 60) -> Any:
    """The user's warm runtime, once its launcher has imported the server."""

    def ready() -> Any | None:
        container = container_of(engine, user)
        if container is None or WARM_LABEL not in container.labels:
            return None
        try:
            logs = container.logs()
        except docker.errors.NotFound:
            return None
        return container if b"waiting for the hub's activation" in logs else None

    return wait_until(ready, timeout=timeout, what=f"{user}'s warm runtime")


def no_container(engine: docker.DockerClient, user: str, timeout: float = 30) -> None:
    wait_until(
        lambda: container_of(engine, user) is None, timeout=timeout, what=f"{user}: no container"
    )


def environment(container: Any) -> dict[str, str]:
    return dict(line.split("=", 1) for line in container.attrs["Config"]["Env"])


def address(container: Any) -> str:
    container.reload()
    (network,) = container.attrs["NetworkSettings"]["Networks"].values()
    return f"http://{network['IPAddress']}:8888"


def test_a_home_page_visit_makes_the_next_runtime_with_no_token_and_counted_by_nothing(
    warm_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    visit_home(warm_hub, username)

    container = warm_container(engine, username)
    labels = container.labels
    assert (labels["org.kernelhub.user"], labels["org.kernelhub.server"]) == (username, "")
    assert (labels["org.kernelhub.runtime-type"], labels["org.kernelhub.gpus"]) == ("cpu", "")
    host = container.attrs["HostConfig"]
    assert (host["Memory"], host["CpuQuota"]) == (1024**3, 100_000)
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    mounts = {m["Destination"]: m["Name"] for m in container.attrs["Mounts"]}
    assert mounts["/home/jovyan"] == f"{PREFIX}-drive-{username}"
    env = environment(container)
    # no token in a container nobody has started yet (nor later: it comes by activation)
    assert not {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"} & env.keys()
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    # the hub lists no server, so neither quotas nor the daemon count it
    assert api.get(f"users/{username}").json()["servers"] == {}
    assert f"Warm runtime ready for {username}/ (cpu)" in warm_hub.log()
    visit_home(warm_hub, username)  # a second visit makes no second one
    assert len(engine.containers.list(filters={"label": f"org.kernelhub.user={username}"})) == 1


def test_start_claims_it_and_the_server_is_its_users_with_a_working_drive(
    warm_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    visit_home(warm_hub, username)
    warm = warm_container(engine, username)

    started = time.monotonic()
    model = start_runtime(api, username, "", "cpu")
    took = time.monotonic() - started

    running = container_of(engine, username)
    assert running is not None and running.id == warm.id, "the warm container was claimed"
    assert f"Claimed the warm runtime {warm.id[:12]} for {username}/" in warm_hub.log()
    server = f"{warm_hub.url}{model['url']}"
    assert api.get(f"{server}api/status").status_code == 200
    identity = api.get(f"{server}api/me").json()["identity"]
    assert identity["name"] == username
    saved = api.put(
        f"{server}api/contents/kept.txt",
        json={"type": "file", "format": "text", "content": "on my drive"},
    )
    assert saved.status_code in (200, 201)
    print(f"warm start to ready through the REST API: {took:.2f} s")


def test_a_start_while_it_is_still_being_made_waits_for_it_and_claims_it(
    warm_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    visit_home(warm_hub, username)  # no wait: the Start comes at once

    start_runtime(api, username, "", "cpu")

    running = container_of(engine, username)
    assert running is not None and WARM_LABEL in running.labels
    assert f"Claimed the warm runtime {running.id[:12]} for {username}/" in warm_hub.log()


def test_its_server_keeps_its_cookies_to_its_own_path_like_a_cold_one(
    warm_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    # JupyterHub reads the server's URL prefix when it is imported: a server imported
    # before it knew it set its OAuth cookie (the user's token) on "/", which the
    # browser then sends to every other user's server on this origin
    session = sign_in(warm_hub, username, warm_hub.password(username))
    try:
        warm_container(engine, username)
        start_runtime(api, username, "", "cpu")
        assert WARM_LABEL in container_of(engine, username).labels  # type: ignore[union-attr]

        assert session.get(f"/user/{username}/tree").status_code == 200  # through OAuth

        paths = {c.name: c.path for c in session.cookies.jar}
        assert paths[f"jupyterhub-user-{username}"] == f"/user/{username}/"
    finally:
        session.close()


def test_another_users_spawn_never_gets_it_and_cannot_activate_it(
    warm_hub: HubProcess, engine: docker.DockerClient, username: str
) -> None:
    alice, bob = username, f"{username}b"
    visit_home(warm_hub, alice)
    alices = warm_container(engine, alice)

    with warm_hub.api(warm_hub.token(bob)) as bob_api:
        try:
            start_runtime(bob_api, bob, "", "cpu")
            bobs = container_of(engine, bob)
            assert bobs is not None and bobs.id != alices.id
            assert bobs.labels["org.kernelhub.user"] == bob
            assert WARM_LABEL not in bobs.labels  # a cold start: nothing of alice's
        finally:
            stop_all_runtimes(bob_api, bob)

    url = address(alices)
    attempts = {
        "no secret": {"environment": {"JUPYTERHUB_USER": bob}},
        "a guessed secret": {"secret": secrets.token_hex(32), "environment": {}},
        "a secret of the wrong type": {"secret": 0, "environment": {}},
    }
    for what, body in attempts.items():
        answer = httpx.post(f"{url}/activate", json=body, timeout=10)
        assert answer.status_code == 403, what
        assert answer.json() == {"status": 403, "message": "not this runtime's activation"}
    assert httpx.get(f"{url}/api/status", timeout=10).status_code == 404
    oversized = httpx.post(f"{url}/activate", content=b"{" * 70_000, timeout=10)
    assert oversized.status_code == 413
    alices.reload()
    assert alices.status == "running" and WARM_LABEL in alices.labels
    assert b"warm runtime not activated" not in alices.logs()
    with warm_hub.api(warm_hub.token(alice)) as alice_api:
        try:  # still alice's, still claimable by her
            start_runtime(alice_api, alice, "", "cpu")
            assert container_of(engine, alice).id == alices.id  # type: ignore[union-attr]
        finally:
            stop_all_runtimes(alice_api, alice)


def test_a_start_refused_by_a_quota_change_removes_it_and_a_refusing_quota_prevents_it(
    warm_hub: HubProcess,
    engine: docker.DockerClient,
    api: httpx.Client,
    store: QuotaStore,
    username: str,
) -> None:
    visit_home(warm_hub, username)
    warm_container(engine, username)
    store.set_rule(Rule("user", username, max_concurrent=0))

    refused = api.post(server_path(username, ""), json={"user_options": {"runtime": "cpu"}})

    assert refused.status_code == 403, refused.text
    assert refused.json()["message"].startswith("runtime limit reached")
    no_container(engine, username)
    assert api.get(f"users/{username}").json()["servers"] == {}

    visit_home(warm_hub, username)  # while the quota refuses, none is made
    time.sleep(3)
    assert container_of(engine, username) is None


def test_a_spawn_of_another_type_never_claims_it_and_gets_its_own_limits(
    warm_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    visit_home(warm_hub, username)
    warm = warm_container(engine, username)

    start_runtime(api, username, "", "small")

    running = container_of(engine, username)
    assert running is not None and running.id != warm.id
    assert running.attrs["HostConfig"]["Memory"] == 512 * 1024**2
    assert WARM_LABEL not in running.labels
    # the hub says what differed (never the values)
    assert (
        "not used (it was made with other environment.CPU_LIMIT, environment.KERNELHUB_RUNTIME"
        "_TYPE, environment.MEM_LIMIT, host_config, labels.org.kernelhub.cpu-limit, "
        "labels.org.kernelhub.runtime-type): starting cold"
    ) in warm_hub.log()


def test_a_gpu_spawn_never_claims_it_and_gpu_types_are_never_prepared(
    warm_hub: HubProcess, engine: docker.DockerClient, api: httpx.Client, username: str
) -> None:
    visit_home(warm_hub, username)
    warm = warm_container(engine, username)

    start_runtime(api, username, "", "gpu")

    running = container_of(engine, username)
    assert running is not None and running.id != warm.id
    assert running.labels["org.kernelhub.gpus"] in ("0", "1")
    assert WARM_LABEL not in running.labels
    stop_all_runtimes(api, username)
    no_container(engine, username)

    visit_home(warm_hub, username)  # the last type used has a GPU: nothing is prepared
    time.sleep(3)
    assert container_of(engine, username) is None


def test_an_unused_one_is_removed_after_the_idle_timeout(
    warm_hub: HubProcess, engine: docker.DockerClient, username: str
) -> None:
    visit_home(warm_hub, username)
    warm_container(engine, username)

    no_container(engine, username, timeout=IDLE_TIMEOUT_S + 30)
    assert f"of {username}/: unused" in warm_hub.log()


def test_none_outlives_the_hub(
    engine: docker.DockerClient, hub_factory: Callable[..., HubProcess], username: str
) -> None:
    hub = hub_factory(CONFIG, name="warm-stop", runtimes="docker", quotas=False)
    visit_home(hub, username)
    warm_container(engine, username)

    hub.stop()  # SIGTERM: running runtimes stay, warm ones go

    no_container(engine, username)
