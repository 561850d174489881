"""Spawns are checked against the quota store before they start.

A real hub (local runtimes, a configured inventory of two GPUs) and the quota
store `kernelhub up` gives kernelhub-quotad; usage is written into that store
as the daemon would account it. The hub only reads the store: it creates and
migrates nothing, so the fixtures migrate it as the daemon does at its start.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from harness import HubProcess, server_path, start_runtime, stop_all_runtimes, wait_ready

from kernelhub.quotagate.gate import STORE_UNAVAILABLE
from kernelhub.quotas.policy import Rule
from kernelhub.quotas.store import QuotaStore

pytestmark = pytest.mark.slow

CONTACT = "the GPU team (gpu-help@example.org)"
CONFIG = f"""
c.GpuInventory.devices = ["0", "1"]
c.RuntimeCatalog.max_running_runtimes_per_user = 3
c.QuotaGate.contact = {CONTACT!r}
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


def test_a_flag_that_blocks_gpus_refuses_gpu_spawns_only_and_keeps_its_reason_from_the_user(
    quota_hub: HubProcess, store: QuotaStore, api: httpx.Client, username: str
) -> None:
    # the detector's explanation, as kernelhub-quotad stores it as the flag's reason
    explanation = (
        "Runtime 'x/' at 2026-11-27T15:00:00Z: mining-like, score 1.40 (>= 1.00 to flag). "
        "Signals: pool_port (+0.60): connected to 203.0.113.7:14444"
    )
    flagged_at = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    store.flag(username, explanation, block_gpu=True, at=flagged_at)

    response = api.post(server_path(username, ""), json={"user_options": {"runtime": "gpu"}})

    assert response.status_code == 403
    message = response.json()["message"]
    assert message == (
        "GPU runtimes are blocked for your account (flagged for review on 2026-11-27 15:00 UTC); "
        "an administrator will review it. CPU runtimes are not affected. "
        f"To ask about it, contact {CONTACT}."
    )
    assert not [s for s in ("pool_port", "203.0.113.7", "score", "Signals") if s in message]
    assert start_runtime(api, username, "", "cpu")["ready"]


def test_the_hub_never_migrates_the_quota_store_and_refuses_spawns_until_it_can_read_it(
    hub_factory: Callable[..., HubProcess], tmp_path: Path, username: str
) -> None:
    empty = tmp_path / "quotas.sqlite"
    empty.touch()
    url = f"sqlite:///{empty}"
    # the hub's gate reads the empty file; the daemon `kernelhub up` starts keeps its own
    config = f"c.QuotaGate.db_url = {url!r}\nc.QuotaGate.first_read_wait = 0\n"
    hub = hub_factory(config, name="quota-gate-unmigrated")
    cpu = {"user_options": {"runtime": "cpu"}}
    with hub.api(hub.token(username)) as api:
        try:
            refused = [api.post(server_path(username, name), json=cpu) for name in ("", "b")]
            notices = api.get(f"kernelhub/notices/{username}")

            assert [r.status_code for r in refused] == [503, 503], refused[0].text
            assert refused[0].json()["message"] == STORE_UNAVAILABLE
            assert api.get(f"users/{username}").json()["servers"] == {}
            assert notices.status_code == 200 and notices.json() == {"notices": []}
            with closing(sqlite3.connect(empty)) as db:
                assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
            assert empty.stat().st_size == 0, "the hub wrote to the quota store"
            warning = "Quota checks unavailable, spawns refused: the quota store has no schema yet"
            assert hub.log().count(warning) == 1, "once per cause, not once per spawn"

            # migrated, as kernelhub-quotad does when it starts: read from the next spawn on
            with QuotaStore.open(url) as store:
                store.set_rule(Rule("user", username, max_concurrent=1))
            assert start_runtime(api, username, "", "cpu")["ready"]
            second = api.post(server_path(username, "b"), json=cpu)
            assert second.status_code == 403, second.text
            assert second.json()["message"].startswith("runtime limit reached: 1 of 1 runtime")
            assert "Quota checks available again" in hub.log()
        finally:
            stop_all_runtimes(api, username)


def test_a_spawn_waits_for_a_quota_store_the_daemon_has_not_created_yet(
    hub_factory: Callable[..., HubProcess], tmp_path: Path, username: str
) -> None:
    # a deployment may start kernelhub-quotad after the hub: the first spawns wait for
    # its store (QuotaGate.first_read_wait) instead of failing
    url = f"sqlite:///{tmp_path / 'quotas.sqlite'}"
    hub = hub_factory(f"c.QuotaGate.db_url = {url!r}\n", name="quota-gate-late-store", quotas=False)
    cpu = {"user_options": {"runtime": "cpu"}}
    with hub.api(hub.token(username)) as api, ThreadPoolExecutor(1) as pool:
        try:
            spawn = pool.submit(api.post, server_path(username, ""), json=cpu)
            time.sleep(3)
            assert not spawn.done(), "refused before the store could appear"
            QuotaStore.open(url).close()  # what kernelhub-quotad does as it starts

            answer = spawn.result(timeout=60)
            assert answer.status_code in (201, 202), answer.text
            assert wait_ready(api, username, "")["ready"]
        finally:
            stop_all_runtimes(api, username)
