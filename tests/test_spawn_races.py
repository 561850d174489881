"""Concurrent spawns of one user are counted against each other.

The limits on what a user holds at once (a quota rule's ``max_gpus`` and
``max_concurrent``, the hub's ``RuntimeCatalog.max_running_runtimes_per_user``) are
checked with an awaited read of the quota store. Requests fired at the same moment
must still be judged one after the other: exactly as many start as the limit
allows, and the others are refused up front, leaving no server, process or GPU.

A real hub (local runtimes, a configured inventory of three GPUs) and the quota
store `kernelhub up` gives kernelhub-quotad, where the tests write the user's rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest
from harness import HubProcess, runtime_pids, server_path, stop_all_runtimes, wait_ready

from kernelhub.quotas.policy import Rule
from kernelhub.quotas.store import QuotaStore

pytestmark = pytest.mark.slow

GPUS = ["0", "1", "2"]
RUNTIME_CAP = 3
CONFIG = f"""
c.GpuInventory.devices = {GPUS!r}
c.RuntimeCatalog.max_running_runtimes_per_user = {RUNTIME_CAP}
"""
STARTED = (201, 202)


@pytest.fixture(scope="module")
def race_hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    # the quota daemon on: its store holds the rules these tests write
    return hub_factory(CONFIG, name="spawn-races", env={"KERNELHUB_QUOTAS": "1"})


@pytest.fixture
def store(race_hub: HubProcess) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{race_hub.data_dir / 'quotas.sqlite'}") as opened:
        yield opened


@pytest.fixture
def token(race_hub: HubProcess, username: str) -> str:
    return race_hub.token(username)


@pytest.fixture
def api(race_hub: HubProcess, username: str, token: str) -> Iterator[httpx.Client]:
    with race_hub.api(token) as client:
        yield client
        stop_all_runtimes(client, username)


def post_at_once(
    hub: HubProcess, token: str, user: str, servers: list[str], runtime: str
) -> dict[str, httpx.Response]:
    """POST a spawn of every server at the same moment, as a script or two tabs might."""

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=f"{hub.url}/hub/api/", headers={"Authorization": f"token {token}"}, timeout=60
        ) as client:
            body = {"user_options": {"runtime": runtime}}
            return await asyncio.gather(
                *(client.post(server_path(user, server), json=body) for server in servers)
            )

    return dict(zip(servers, asyncio.run(fire()), strict=True))


def running_servers(api: httpx.Client, user: str) -> list[str]:
    return sorted(api.get(f"users/{user}").json()["servers"])


def server_records(api: httpx.Client, user: str) -> set[str]:
    """Every server record of ``user``, stopped ones too."""
    model = api.get(f"users/{user}", params={"include_stopped_servers": 1}).json()
    return set(model["servers"])


def started_and_refused(
    responses: dict[str, httpx.Response],
) -> tuple[list[str], dict[str, httpx.Response]]:
    started = [name for name, r in responses.items() if r.status_code in STARTED]
    refused = {name: r for name, r in responses.items() if r.status_code not in STARTED}
    return started, refused


def test_concurrent_gpu_spawns_within_max_gpus_of_one_get_exactly_one_gpu(
    race_hub: HubProcess, store: QuotaStore, api: httpx.Client, token: str, username: str
) -> None:
    store.set_rule(Rule("user", username, max_gpus=1))
    servers = ["gpu-a", "gpu-b", "gpu-c"]  # free GPUs for all three, quota for one

    responses = post_at_once(race_hub, token, username, servers, "gpu")

    started, refused = started_and_refused(responses)
    assert len(started) == 1, {name: r.text for name, r in responses.items()}
    for name, response in refused.items():
        assert response.status_code == 403, (name, response.text)
        assert response.json()["message"] == (
            "GPU limit reached: your runtimes hold 1 of 1 GPU; stop a GPU runtime to start this one"
        )
    winner = wait_ready(api, username, started[0])
    assert winner["user_options"] == {"runtime": "gpu"}
    assert running_servers(api, username) == started
    assert not server_records(api, username) & refused.keys(), "refused servers must not exist"
    assert len(runtime_pids(race_hub.data_dir, username)) == 1
    gpus = api.get("kernelhub/runtime-types").json()["gpus"]
    assert (gpus["total"], gpus["free"]) == (len(GPUS), len(GPUS) - 1), "refusals hold no GPU"


@pytest.mark.parametrize(
    ("quota_limit", "limit"),
    [(1, 1), (None, RUNTIME_CAP)],
    ids=["quota-rule-max-concurrent", "hub-runtime-cap"],
)
def test_concurrent_spawns_stop_at_the_runtime_limit_with_one_status_and_message(
    race_hub: HubProcess,
    store: QuotaStore,
    api: httpx.Client,
    token: str,
    username: str,
    quota_limit: int | None,
    limit: int,
) -> None:
    """The hub's cap and a quota rule refuse alike: 403, one message naming the limit."""
    if quota_limit is not None:
        store.set_rule(Rule("user", username, max_concurrent=quota_limit))
    servers = [f"cpu-{i}" for i in range(limit + 1)]

    responses = post_at_once(race_hub, token, username, servers, "cpu")

    started, refused = started_and_refused(responses)
    assert len(started) == limit, {name: r.text for name, r in responses.items()}
    (response,) = refused.values()
    assert response.status_code == 403, response.text
    runtimes = "runtime" if limit == 1 else "runtimes"
    assert response.json() == {
        "status": 403,
        "message": f"runtime limit reached: {limit} of {limit} {runtimes} running; "
        "stop one to start another",
    }
    for name in started:
        wait_ready(api, username, name)
    assert running_servers(api, username) == sorted(started)
    assert not server_records(api, username) & refused.keys(), "refused servers must not exist"
    assert len(runtime_pids(race_hub.data_dir, username)) == limit
