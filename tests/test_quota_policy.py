"""Quota policy as tables: rules → limits, usage → refusals, times → verdicts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from kernelhub.quotas.policy import (
    UNLIMITED,
    Limits,
    Refusal,
    Rule,
    check_spawn,
    effective_limits,
    idle_verdict,
    session_verdict,
    week_start,
)

NOW = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # a Thursday
H = 3600.0


def group(name: str, **fields: Any) -> Rule:
    return Rule("group", name, **fields)


# -- rules → limits -------------------------------------------------------------------


def case(name: str, expected: Any, default: Any = None, groups: Any = (), user: Any = None) -> Any:
    return pytest.param(default, list(groups), user, expected, id=name)


def own(**fields: Any) -> Rule:
    return Rule("user", "u", **fields)


@pytest.mark.parametrize(
    ("default", "groups", "user", "expected"),
    [
        case("built-in defaults", {}),
        case("default rule", {"gpu_hours_week": 20}, Rule(gpu_hours_week=20)),
        case(
            "a group overrides the default, even when stricter",
            {"gpu_hours_week": 10},
            Rule(gpu_hours_week=20),
            [group("students", gpu_hours_week=10)],
        ),
        case(
            "among groups the most generous value wins, field by field",
            {"gpu_hours_week": 40, "max_gpus": 4},
            groups=[group("a", gpu_hours_week=10, max_gpus=4), group("b", gpu_hours_week=40)],
        ),
        case(
            "unlimited is the most generous",
            {"max_concurrent": None},
            groups=[group("a", max_concurrent=2), group("b", max_concurrent=UNLIMITED)],
        ),
        case(
            "the user rule overrides groups",
            {"idle_minutes": 30},
            Rule(idle_minutes=60),
            [group("a", idle_minutes=120)],
            own(idle_minutes=30),
        ),
        case(
            "a user rule can lift limits",
            {"gpu_hours_day": None, "gpu_hours_week": None},
            groups=[group("a", gpu_hours_day=2)],
            user=own(gpu_hours_day=UNLIMITED, gpu_hours_week=UNLIMITED),
        ),
        case(
            "zero is a limit, not unset",
            {"max_gpus": 0, "gpu_hours_week": 0},
            user=own(max_gpus=0, gpu_hours_week=0),
        ),
    ],
)
def test_effective_limits(
    default: Rule | None, groups: list[Rule], user: Rule | None, expected: dict[str, Any]
) -> None:
    assert effective_limits(default, groups, user) == Limits(**expected)


@pytest.mark.parametrize(
    ("default", "groups", "user", "expected"),
    [
        case("12 h for any type", {"cpu": 12, "gpu": 12, "a100": 12}),
        case(
            "a rule naming one type leaves the others",
            {"cpu": 12, "gpu": 6, "a100": 12},
            Rule(max_session_hours={"gpu": 6}),
        ),
        case(
            "'*' speaks for every type",
            {"cpu": 24, "gpu": 24, "a100": 24},
            Rule(max_session_hours={"gpu": 6}),
            [group("a", max_session_hours={"*": 24})],
        ),
        case(
            "a group's '*' counts for types another group names",
            {"cpu": 24, "gpu": 24, "a100": 24},
            groups=[
                group("a", max_session_hours={"*": 24}),
                group("b", max_session_hours={"gpu": 6}),
            ],
        ),
        case(
            "most generous group per type, then the user",
            {"cpu": None, "gpu": 48, "a100": 12},
            groups=[
                group("a", max_session_hours={"gpu": 8}),
                group("b", max_session_hours={"gpu": 48}),
            ],
            user=own(max_session_hours={"cpu": UNLIMITED}),
        ),
    ],
)
def test_max_session_hours_per_runtime_type(
    default: Rule | None, groups: list[Rule], user: Rule | None, expected: dict[str, float | None]
) -> None:
    resolved = effective_limits(default, groups, user)
    assert {kind: resolved.session_hours(kind) for kind in expected} == expected


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (lambda: Rule("default", "x"), "the default rule has no subject"),
        (lambda: Rule("group", ""), "group and user rules need one"),
        (lambda: Rule("team", "x"), "rule scope must be one of default, group, user, not 'team'"),
        (lambda: Rule(gpu_hours_week=-2), "gpu_hours_week must be >= 0 or -1 .unlimited., not -2"),
        (lambda: Rule(idle_minutes=0), "idle_minutes must be > 0 or -1"),
        (lambda: Rule(max_session_hours={"gpu": 0}), "max_session_hours must be > 0 or -1"),
    ],
)
def test_invalid_rules_are_refused(rule: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        rule()


# -- spawn checks ---------------------------------------------------------------------


def week(*hours_by_day: tuple[str, float]) -> list[tuple[date, float]]:
    return [(date.fromisoformat(day), hours * H) for day, hours in hours_by_day]


def spawn(
    name: str,
    message: str | None,
    day: float = 0,
    used: Any = (),
    running: int = 0,
    gpus: int = 1,
    **limit_fields: Any,
) -> Any:
    """One row: limits, today's and the week's usage (GPU-hours), what is asked, the answer."""
    return pytest.param(Limits(**limit_fields), day, week(*used), running, gpus, message, id=name)


USED_UP = "GPU quota used up: {} GPU-hours in the last 7 days; more becomes available from {} UTC"


@pytest.mark.parametrize(
    ("resolved", "day_hours", "buckets", "running", "gpus", "message"),
    [
        spawn("under quota", None, used=[("2026-11-26", 29.9)]),
        spawn(
            "week used up: the oldest day leaves tonight",
            USED_UP.format("30.0 of 30", "2026-11-27 00:00"),
            used=[("2026-11-20", 10), ("2026-11-22", 10), ("2026-11-26", 10)],
        ),
        spawn(
            "week used up: enough leaves only with the 24th",
            USED_UP.format("31.0 of 30", "2026-12-01 00:00"),
            used=[("2026-11-20", 1), ("2026-11-24", 20), ("2026-11-26", 10)],
        ),
        spawn("days before the week do not count", None, used=[("2026-11-19", 50)]),
        spawn(
            "day used up",
            "GPU quota used up: 4.0 of 4 GPU-hours today (UTC); "
            "more becomes available from 2026-11-27 00:00 UTC",
            day=4,
            gpu_hours_day=4,
        ),
        spawn(
            "day and week used up: the later reset is the one that matters",
            USED_UP.format("8.0 of 8", "2026-12-02 00:00"),
            day=4,
            used=[("2026-11-25", 4), ("2026-11-26", 4)],
            gpu_hours_day=4,
            gpu_hours_week=8,
        ),
        spawn("zero quota", "no GPU time: your quota is 0 GPU-hours per 7 days", gpu_hours_week=0),
        spawn(
            "CPU-only spawns are never refused for GPU hours",
            None,
            day=5,
            used=[("2026-11-26", 40)],
            gpus=0,
            gpu_hours_day=1,
        ),
        spawn(
            "max concurrent, CPU too",
            "runtime limit reached: 2 of 2 runtimes running; stop one to start another",
            running=2,
            gpus=0,
            max_concurrent=2,
        ),
        spawn(
            "max GPUs",
            "this runtime needs 2 GPUs, more than your limit of 1 GPU",
            gpus=2,
            max_gpus=1,
        ),
        spawn("max GPUs allows its number", None, max_gpus=1),
    ],
)
def test_check_spawn(
    resolved: Limits,
    day_hours: float,
    buckets: list[tuple[date, float]],
    running: int,
    gpus: int,
    message: str | None,
) -> None:
    refusal = check_spawn(resolved, day_hours * H, buckets, running, gpus, NOW)
    assert (refusal.message if refusal else None) == message
    if refusal is not None:
        assert refusal.status == 403
        json.dumps(refusal.details)


def test_a_refusal_carries_what_was_used_the_limit_and_the_reset() -> None:
    refusal = check_spawn(Limits(), 0, week(("2026-11-21", 30)), 0, 1, NOW)
    assert refusal == Refusal(
        "gpu-quota",
        "GPU quota used up: 30.0 of 30 GPU-hours in the last 7 days; "
        "more becomes available from 2026-11-28 00:00 UTC",
        {
            "used_gpu_hours": 30.0,
            "limit_gpu_hours": 30,
            "window": "7d",
            "resets_at": "2026-11-28T00:00:00+00:00",
        },
        datetime(2026, 11, 28, tzinfo=UTC),
    )
    assert week_start(NOW) == date(2026, 11, 20)


@pytest.mark.parametrize(
    ("in_use", "blocked", "reason", "message"),
    [
        (
            1,
            None,
            "max-gpus",
            "GPU limit reached: your runtimes hold 1 of 2 GPUs; "
            "stop a GPU runtime to start this one",
        ),
        # what the user is told of the flag (disclosure.disclose), verbatim
        (
            0,
            "GPU runtimes are blocked for your account",
            "gpu-blocked",
            "GPU runtimes are blocked for your account",
        ),
    ],
)
def test_gpus_held_and_blocked_accounts(
    in_use: int, blocked: str | None, reason: str, message: str
) -> None:
    refusal = check_spawn(
        Limits(max_gpus=2), 0, [], 1, 2, NOW, gpus_in_use=in_use, gpu_blocked=blocked
    )
    assert refusal is not None and (refusal.reason, refusal.message) == (reason, message)
    assert check_spawn(Limits(max_gpus=2), 0, [], 1, 0, NOW, gpus_in_use=2, gpu_blocked="x") is None


# -- running runtimes -----------------------------------------------------------------

STARTED = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("resolved", "kind", "now", "verdict"),
    [
        (Limits(), "gpu", "13:44", None),
        (
            Limits(),
            "gpu",
            "13:45",
            "warn: your GPU runtime will be stopped at 14:00 UTC (in 15 min): "
            "12 h is the maximum session length; save your work",
        ),
        (
            Limits(),
            "gpu",
            "14:00",
            "stop: your GPU runtime was stopped after 12 h, the maximum session length",
        ),
        (
            Limits(max_session_hours={"cpu": 1.5}),
            "cpu",
            "03:31",
            "stop: your CPU runtime was stopped after 90 min, the maximum session length",
        ),
        (
            Limits(max_session_hours={"*": 3}),
            "a100-large",
            "04:50",
            'warn: your "a100-large" runtime will be stopped at 05:00 UTC (in 10 min): '
            "3 h is the maximum session length; save your work",
        ),
        (Limits(max_session_hours={"gpu": None}), "gpu", "23:00", None),
    ],
)
def test_session_verdict(resolved: Limits, kind: str, now: str, verdict: str | None) -> None:
    moment = datetime.combine(NOW.date(), datetime.strptime(now, "%H:%M").time(), tzinfo=UTC)
    result = session_verdict(resolved, kind, STARTED, moment)
    assert (result and f"{result.kind}: {result.message}") == verdict
    if result is not None:
        assert result.reason == "max-session-age"


def test_session_verdict_details() -> None:
    verdict = session_verdict(Limits(), "gpu", STARTED, STARTED + timedelta(hours=12, seconds=5))
    assert verdict is not None
    assert verdict.details == {
        "runtime_type": "gpu",
        "age_seconds": 43205,
        "limit_hours": 12,
        "stop_at": "2026-11-26T14:00:00+00:00",
    }


LAST = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("minutes", "gpu_util", "busy", "verdict"),
    [
        (79, 0.0, False, None),
        (
            80,
            0.0,
            False,
            "warn: your runtime will be stopped at 13:30 UTC (in 10 min) if it stays idle: "
            "no kernel activity and its GPU unused for 80 min",
        ),
        (
            90,
            0.02,
            False,
            "stop: your runtime was stopped after 90 min idle "
            "(no kernel activity and its GPU unused)",
        ),
        (200, None, False, "stop: your runtime was stopped after 90 min idle (no kernel activity)"),
        (200, 0.03, False, None),  # a GPU busy with a background job is not idle
        (200, 0.0, True, None),  # nor is a kernel still executing
        (200, None, True, None),
    ],
)
def test_idle_verdict(
    minutes: int, gpu_util: float | None, busy: bool, verdict: str | None
) -> None:
    result = idle_verdict(Limits(), LAST, gpu_util, busy, LAST + timedelta(minutes=minutes))
    assert (result and f"{result.kind}: {result.message}") == verdict
    if result is not None:
        assert result.reason == "idle"
        json.dumps(result.details)


def test_idle_limits_come_from_rules() -> None:
    resolved = effective_limits(None, [group("night", idle_minutes=UNLIMITED)], None)
    assert idle_verdict(resolved, LAST, 0.0, False, LAST + timedelta(days=3)) is None
    resolved = effective_limits(Rule(idle_minutes=20), [], None)
    verdict = idle_verdict(resolved, LAST, None, False, LAST + timedelta(minutes=20))
    assert verdict is not None and verdict.details == {
        "idle_seconds": 1200,
        "limit_minutes": 20,
        "gpu_util": None,
        "stop_at": "2026-11-26T12:20:00+00:00",
    }


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        session_verdict(Limits(), "gpu", datetime(2026, 11, 26), NOW)
