"""One user's quota usage, as the hub's spawn check, its home page notices and the quota
API all read it (``kernelhub.quotas.usage.read_usage``), from a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from kernelhub.quotas.api_model import summary
from kernelhub.quotas.policy import Rule, midnight
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.usage import read_usage

NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
TODAY = NOW.date()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{tmp_path / 'quotas.sqlite'}") as opened:
        yield opened


def used(store: QuotaStore, user: str, kind: str, day: date, hours: float, gpus: int = 1) -> None:
    """``hours`` of a ``kind`` runtime from 01:00 on ``day``, its GPUs half busy, 1 CPU."""
    start = midnight(day) + timedelta(hours=1)
    end = start + timedelta(hours=hours)
    store.account_interval(f"{user}/{kind}-{day}", user, kind, start, end, gpus, 0.5, hours * 3600)


def test_today_the_rolling_week_and_each_runtime_type(store: QuotaStore) -> None:
    used(store, "ann", "gpu", TODAY, 2)
    used(store, "ann", "gpu", TODAY - timedelta(days=6), 3)  # the week's first day
    used(store, "ann", "gpu", TODAY - timedelta(days=7), 5)  # before it
    used(store, "ann", "cpu", TODAY, 4, gpus=0)

    usage = read_usage(store, "ann", [], NOW)

    assert usage.week_since == TODAY - timedelta(days=6)
    assert (usage.day_gpu_seconds, usage.week_gpu_seconds) == (2 * 3600, 5 * 3600)
    assert usage.by_runtime_type() == {
        "cpu": {"gpu_hours": 0, "gpu_hours_weighted": 0, "cpu_hours": 4},
        "gpu": {"gpu_hours": 5, "gpu_hours_weighted": 2.5, "cpu_hours": 5},
    }


def test_the_spawn_check_and_the_quota_api_give_the_same_refusal(store: QuotaStore) -> None:
    store.set_rule(Rule("group", "lab", gpu_hours_week=4))
    used(store, "bo", "gpu", TODAY - timedelta(days=1), 4)

    usage = read_usage(store, "bo", ["lab"], NOW)
    refusal = usage.spawn_refusal(running_count=0, requested_gpus=1)

    assert refusal is not None and refusal.reason == "gpu-quota"
    assert refusal.message.startswith("GPU quota used up: 4.0 of 4 GPU-hours in the last 7 days")
    assert summary(store, "bo", ["lab"], NOW)["gpu_refusal"]["message"] == refusal.message
    assert usage.spawn_refusal(running_count=0, requested_gpus=0) is None, "CPU: never"
    assert read_usage(store, "bo", [], NOW).spawn_refusal(0, 1) is None, "30 h by default"


def test_only_a_flag_that_blocks_gpus_refuses_them(store: QuotaStore) -> None:
    store.flag("cy", "shared a token")
    assert read_usage(store, "cy", [], NOW).gpu_blocked is False
    assert read_usage(store, "cy", [], NOW).spawn_refusal(0, 1) is None
    store.flag("cy", "mining-like runtime stopped", block_gpu=True)

    usage = read_usage(store, "cy", [], NOW)

    assert usage.gpu_blocked is True
    refusal = usage.spawn_refusal(running_count=0, requested_gpus=1, contact="the GPU team")
    assert refusal is not None and refusal.reason == "gpu-blocked"
    assert "contact the GPU team" in refusal.message
    assert "mining-like runtime stopped" not in refusal.message, "the reason is for admins"
