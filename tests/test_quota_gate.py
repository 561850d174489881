"""Spawns are checked against the quota store before they start.

A real hub (local runtimes, a configured inventory of two GPUs) and the quota
store `kernelhub up` gives kernelhub-quotad; usage is written into that store
as the daemon would account it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from harness import HubProcess, server_path, start_runtime, stop_all_runtimes

from kernelhub.quotas.policy import Rule
from kernelhub.quotas.store import QuotaStore

CONFIG = """
c.GpuInventory.devices = ["0", "1"]
c.RuntimeCatalog.max_running_runtimes_per_user = 3
"""


@pytest.fixture(scope="module")
def quota_hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(CONFIG, name="quota-gate")


@pytest.fixture
def store(quota_hub: HubProcess) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{quota_hub.data_dir / 'quotas.sqlite'}") as opened:
        yield opened


@pytest.fixture
def api(quota_hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    with quota_hub.api(quota_hub.token(username)) as client:
        yield client
        stop_all_runtimes(client, username)


def used_gpu_hours(store: QuotaStore, user: str, hours: float) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=hours)
    store.account_interval(f"{user}/old", user, "gpu", start, end, 1, 1.0, 0.0)


def test_a_gpu_spawn_over_the_weekly_quota_is_refused_with_use_limit_and_reset(
    quota_hub: HubProcess, store: QuotaStore, api: httpx.Client, username: str
) -> None:
    store.set_rule(Rule("user", username, gpu_hours_week=1))
    used_gpu_hours(store, username, 0.5)
    used_gpu_hours(store, username, 0.5)  # the same interval again: counted once
    store.account_interval(
        f"{username}/older",
        username,
        "gpu",
        datetime.now(UTC) - timedelta(hours=2),
        datetime.now(UTC) - timedelta(hours=1, minutes=30),
        1,
        1.0,
        0.0,
    )

    response = api.post(server_path(username, ""), json={"user_options": {"runtime": "gpu"}})

    assert response.status_code == 403, response.text
    message = response.json()["message"]
    assert message.startswith("GPU quota used up: 1.0 of 1 GPU-hour"), message
    assert "in the last 7 days; more becomes available from" in message
    assert "UTC" in message
    assert api.get(f"users/{username}").json()["servers"] == {}, "nothing left pending"
    assert f"Refused runtime for {username}/" in quota_hub.log()


def test_cpu_runtimes_are_never_refused_for_gpu_hours(
    quota_hub: HubProcess, store: QuotaStore, api: httpx.Client, username: str
) -> None:
    store.set_rule(Rule("user", username, gpu_hours_week=1))
    used_gpu_hours(store, username, 2)

    model = start_runtime(api, username, "", "cpu")

    assert model["ready"]


def test_a_concurrency_rule_refuses_the_extra_runtime(
    quota_hub: HubProcess, store: QuotaStore, api: httpx.Client, username: str
) -> None:
    store.set_rule(Rule("user", username, max_concurrent=1))
    start_runtime(api, username, "", "cpu")

    response = api.post(server_path(username, "second"), json={"user_options": {"runtime": "cpu"}})

    assert response.status_code == 403
    assert response.json()["message"] == (
        "runtime limit reached: 1 of 1 runtime running; stop one to start another"
    )
    assert "second" not in api.get(f"users/{username}").json()["servers"]


def test_a_flag_that_blocks_gpus_refuses_gpu_spawns_only(
    quota_hub: HubProcess, store: QuotaStore, api: httpx.Client, username: str
) -> None:
    store.flag(username, "mining-like runtime stopped", block_gpu=True)

    response = api.post(server_path(username, ""), json={"user_options": {"runtime": "gpu"}})

    assert response.status_code == 403
    assert response.json()["message"] == (
        "GPU runtimes are blocked for your account (mining-like runtime stopped); "
        "ask an administrator"
    )
    assert start_runtime(api, username, "", "cpu")["ready"]
