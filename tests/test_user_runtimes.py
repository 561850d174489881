"""What the notebook's resources panel is told about a runtime's idle stop and quota
(``kernelhub.hubapp.user_runtimes``): the quota daemon's own rule, read the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kernelhub.hubapp.home import QUOTAS_OFF, UNREADABLE
from kernelhub.hubapp.kernel_reports import KernelReport
from kernelhub.hubapp.user_runtimes import idle_stop, week_quota
from kernelhub.quotas.policy import Limits

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(hours=2)
LIMITS = Limits(idle_minutes=60)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def report(busy: bool, last_minutes_ago: float | None) -> KernelReport:
    last = ago(last_minutes_ago) if last_minutes_ago is not None else None
    return KernelReport(busy=busy, last_activity=last, received=NOW)


IDLE_RULES = [
    # (limits, hub activity, kernel report, idle stop time, warning due)
    pytest.param(LIMITS, ago(5), None, NOW + timedelta(minutes=55), False, id="active-5-min-ago"),
    pytest.param(
        LIMITS, ago(55), None, NOW + timedelta(minutes=5), True, id="warned-10-min-before"
    ),
    pytest.param(
        LIMITS, ago(50), None, NOW + timedelta(minutes=10), True, id="warning-starts-at-10"
    ),
    pytest.param(LIMITS, ago(49), None, NOW + timedelta(minutes=11), False, id="not-yet-at-11"),
    pytest.param(
        LIMITS,
        ago(55),
        report(False, 2),
        NOW + timedelta(minutes=58),
        False,
        id="kernel-activity-newer-than-hubs",
    ),
    pytest.param(LIMITS, ago(58), report(True, 58), None, False, id="busy-kernel-is-never-idle"),
    pytest.param(LIMITS, None, None, STARTED + timedelta(minutes=60), True, id="since-its-start"),
    pytest.param(Limits(idle_minutes=None), ago(600), None, None, False, id="no-idle-limit"),
    pytest.param(QUOTAS_OFF, ago(600), None, None, False, id="no-quota-daemon"),
    pytest.param(UNREADABLE, ago(600), None, None, False, id="store-unreadable"),
]


@pytest.mark.parametrize(("limits", "activity", "kernels", "stop_at", "warning"), IDLE_RULES)
def test_the_idle_stop_is_the_daemons_rule(
    limits: Limits | str,
    activity: datetime | None,
    kernels: KernelReport | None,
    stop_at: datetime | None,
    warning: bool,
) -> None:
    assert idle_stop(limits, STARTED, activity, kernels, NOW) == (stop_at, warning)


def test_a_stopped_runtime_has_no_idle_stop() -> None:
    assert idle_stop(LIMITS, None, ago(5), None, NOW) == (None, False)


def test_the_quota_bar_takes_the_quota_services_figures() -> None:
    summary = {
        "usage": {"week_gpu_hours": 2.0},
        "limits": {"gpu_hours_week": 10},
        "remaining_gpu_hours": {"week": 8.0, "day": None, "now": 8.0},
        "resets": {"week": "2026-12-05T00:00:00+00:00", "day": "2026-12-02T00:00:00+00:00"},
    }
    assert week_quota(summary) == {
        "gpu_hours_week_used": 2.0,
        "gpu_hours_week_limit": 10,
        "gpu_hours_week_left": 8.0,
        "week_resets": "2026-12-05T00:00:00+00:00",
    }
