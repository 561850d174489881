"""Quota policy: rules → limits → verdicts. Pure: no clock, no database, no I/O.

The daemon and the hub feed in usage and times; everything here is a function of
its arguments, so a rule table can be tested without a runtime or a database.

Rules come in three scopes. A rule's field left ``None`` inherits from the level
below it (user → groups → default → the built-in defaults of ``Limits``); a field
set to ``UNLIMITED`` lifts the limit, e.g. a user rule exempting one researcher.
All times are timezone-aware; usage days are UTC dates.

Every ``details`` dict holds JSON values only, so it can be stored with an event.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

Scope = Literal["default", "group", "user"]
SCOPES: tuple[Scope, ...] = ("default", "group", "user")
UNLIMITED = -1  # in a rule: no limit at all, overriding any lower level
DEFAULT_SESSION_HOURS = 12.0  # any runtime type a rule does not name
ANY_TYPE = "*"  # max_session_hours key for every type not named
WEEK_DAYS = 7  # the rolling week: today (UTC) and the 6 days before
IDLE_GPU_UTIL = 0.02  # a GPU at or below 2 % counts as unused
SESSION_WARNING = timedelta(minutes=15)
IDLE_WARNING = timedelta(minutes=10)


def _default_session_hours() -> dict[str, float | None]:
    return {"cpu": DEFAULT_SESSION_HOURS, "gpu": DEFAULT_SESSION_HOURS}


@dataclass(frozen=True)
class Limits:
    """The limits one user runs under; ``None`` means no limit."""

    gpu_hours_day: float | None = None
    gpu_hours_week: float | None = 30
    max_session_hours: Mapping[str, float | None] = field(default_factory=_default_session_hours)
    idle_minutes: float | None = 90
    max_concurrent: int | None = None
    max_gpus: int | None = None

    def session_hours(self, runtime_type: str) -> float | None:
        """Maximum session age of ``runtime_type``: its own entry, else ``*``, else 12 h."""
        for key in (runtime_type, ANY_TYPE):
            if key in self.max_session_hours:
                return self.max_session_hours[key]
        return DEFAULT_SESSION_HOURS


@dataclass(frozen=True)
class Rule:
    """One row of the rules table. ``None`` inherits; ``UNLIMITED`` lifts the limit."""

    scope: Scope = "default"
    subject: str = ""  # group or user name; "" for the default rule
    gpu_hours_day: float | None = None
    gpu_hours_week: float | None = None
    max_session_hours: Mapping[str, float] | None = None  # runtime type (or "*") -> hours
    idle_minutes: float | None = None
    max_concurrent: int | None = None
    max_gpus: int | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"rule scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        if (self.scope == "default") != (self.subject == ""):
            raise ValueError("the default rule has no subject; group and user rules need one")
        for name, value in self._limit_values():
            positive = name in ("max_session_hours", "idle_minutes")
            if value != UNLIMITED and (value < 0 or (positive and value == 0)):
                raise ValueError(
                    f"{name} must be {'> 0' if positive else '>= 0'} or {UNLIMITED} "
                    f"(unlimited), not {value}"
                )

    def _limit_values(self) -> Iterable[tuple[str, float]]:
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                yield from ((name, hours) for hours in value.values())
            elif value is not None:
                yield name, value


LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class Refusal:
    """Why a spawn may not start; ``message`` is shown to the user verbatim."""

    reason: str  # "gpu-quota", "max-concurrent", "max-gpus", "gpu-blocked"
    message: str
    details: dict[str, Any]
    resets_at: datetime | None = None  # None: nothing frees up by itself
    status: int = 403


@dataclass(frozen=True)
class Verdict:
    """What the daemon should do to a running runtime, and what to tell its user."""

    kind: Literal["warn", "stop"]
    reason: str  # "max-session-age", "idle"
    message: str
    details: dict[str, Any]


def effective_limits(
    default: Rule | None, group_rules: Sequence[Rule], user_rule: Rule | None
) -> Limits:
    """The user's limits: user rule over group rules over default rule over built-ins.

    A user in several groups gets, field by field (and runtime type by runtime
    type), the most generous value any of those groups sets: groups grant
    resources, so joining one more group must never take something away.
    """
    limits = Limits()
    if default is not None:
        limits = _apply(limits, default)
    if group_rules:
        limits = _apply(limits, _most_generous(group_rules))
    if user_rule is not None:
        limits = _apply(limits, user_rule)
    return limits


def _generosity(value: float | None) -> float:
    return math.inf if value == UNLIMITED else -math.inf if value is None else value


def _most_generous(rules: Sequence[Rule]) -> Rule:
    merged: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        if name == "max_session_hours":
            merged[name] = _most_generous_hours([r.max_session_hours or {} for r in rules])
        else:
            merged[name] = max((getattr(r, name) for r in rules), key=_generosity)
    return Rule(scope="group", subject="+".join(r.subject for r in rules), **merged)


def _most_generous_hours(mappings: Sequence[Mapping[str, float]]) -> dict[str, float] | None:
    # a group's hours for a type are its own entry for it, else its "*" entry
    hours: dict[str, float] = {}
    for kind in {kind for mapping in mappings for kind in mapping}:
        values = [m.get(kind, m.get(ANY_TYPE)) for m in mappings]
        hours[kind] = max((v for v in values if v is not None), key=_generosity)
    return hours or None


def _apply(limits: Limits, rule: Rule) -> Limits:
    def lifted(value: Any) -> Any:
        return None if value == UNLIMITED else value

    changes: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        value = getattr(rule, name)
        if value is None:
            continue
        if name == "max_session_hours":
            # per type: a rule naming "gpu" leaves the limit of "cpu" as it was,
            # while a rule with "*" speaks for every type, so it replaces them all
            below = {} if ANY_TYPE in value else limits.max_session_hours
            changes[name] = {**below, **{kind: lifted(hours) for kind, hours in value.items()}}
        else:
            changes[name] = lifted(value)
    return replace(limits, **changes)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; naive datetimes are refused since their zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timezone-aware datetime needed, got {moment!r}")
    return moment.astimezone(UTC)


def midnight(day: date) -> datetime:
    """The start of ``day`` (UTC)."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def week_start(now: datetime) -> date:
    """The first day of the rolling week that contains ``now``."""
    return utc(now).date() - timedelta(days=WEEK_DAYS - 1)


def check_spawn(
    limits: Limits,
    usage_day_gpu_seconds: float,
    usage_week_gpu_seconds: Sequence[tuple[date, float]],
    running_count: int,
    requested_gpus: int,
    now: datetime,
    *,
    gpus_in_use: int = 0,
    gpu_blocked: str | None = None,
) -> Refusal | None:
    """Whether a spawn may start; a ``Refusal`` (HTTP 403) says why not.

    ``usage_week_gpu_seconds`` holds (UTC day, GPU-seconds) buckets; days outside
    the rolling week are ignored, the rest tell when usage leaves the window.
    ``gpus_in_use`` counts GPUs the user's running runtimes hold (``max_gpus``
    bounds the total); ``gpu_blocked``, when a flag blocks the user's GPUs, is what the
    user is told about it (``disclosure.disclose``: never the flag's reason, which holds
    the detector's explanation).
    CPU-only spawns are never refused for GPU reasons.
    """
    if limits.max_concurrent is not None and running_count >= limits.max_concurrent:
        return runtime_limit_refusal(running_count, limits.max_concurrent)
    if requested_gpus <= 0:
        return None
    if gpu_blocked is not None:
        return Refusal("gpu-blocked", gpu_blocked, {})
    if limits.max_gpus is not None and gpus_in_use + requested_gpus > limits.max_gpus:
        details = {"requested": requested_gpus, "in_use": gpus_in_use, "limit": limits.max_gpus}
        limit_text = f"{limits.max_gpus} {_plural(limits.max_gpus, 'GPU')}"
        if requested_gpus > limits.max_gpus:
            message = f"this runtime needs {requested_gpus} GPUs, more than your limit of "
            return Refusal("max-gpus", message + limit_text, details)
        return Refusal(
            "max-gpus",
            f"GPU limit reached: your runtimes hold {gpus_in_use} of {limit_text}; "
            "stop a GPU runtime to start this one",
            details,
        )
    day = _day_refusal(limits, usage_day_gpu_seconds, now)
    week = _week_refusal(limits, usage_week_gpu_seconds, now)
    if day is None or week is None:
        return day or week
    # both used up: report the one that frees up later, since only then can the user spawn
    never = datetime.max.replace(tzinfo=UTC)
    return max(week, day, key=lambda refusal: refusal.resets_at or never)


def runtime_limit_refusal(running_count: int, limit: int) -> Refusal:
    """The one answer to "too many runtimes at once", whichever limit says so.

    The hub's cap (``RuntimeCatalog.max_running_runtimes_per_user``) and a quota
    rule's ``max_concurrent`` both refuse with this: 403 like every other limit on
    what a user may hold (the request itself is fine, the user's allowance is not),
    and one message, so a user cannot tell, and need not care, which limit it was.
    """
    return Refusal(
        "max-concurrent",
        f"runtime limit reached: {running_count} of {limit} "
        f"{_plural(limit, 'runtime')} running; stop one to start another",
        {"running": running_count, "limit": limit},
    )


def _day_refusal(limits: Limits, used_seconds: float, now: datetime) -> Refusal | None:
    limit = limits.gpu_hours_day
    if limit is None or used_seconds < limit * 3600:
        return None
    tomorrow = utc(now).date() + timedelta(days=1)
    return _quota_refusal(used_seconds, limit, "day", midnight(tomorrow))


def _week_refusal(
    limits: Limits, buckets: Sequence[tuple[date, float]], now: datetime
) -> Refusal | None:
    limit = limits.gpu_hours_week
    first = week_start(now)
    by_day = [(day, seconds) for day, seconds in buckets if first <= day <= utc(now).date()]
    used = sum(seconds for _, seconds in by_day)
    if limit is None or used < limit * 3600:
        return None
    # the window moves a day at each midnight: find the first one after which what
    # is left inside it is under the limit again (after 7 days nothing is left)
    resets_at = None
    for shift in range(1, WEEK_DAYS + 1):
        left = sum(seconds for day, seconds in by_day if day >= first + timedelta(days=shift))
        if left < limit * 3600:
            resets_at = midnight(utc(now).date() + timedelta(days=shift))
            break
    return _quota_refusal(used, limit, "week", resets_at)


def _quota_refusal(
    used_seconds: float, limit: float, window: Literal["day", "week"], resets_at: datetime | None
) -> Refusal:
    if limit == 0:
        resets_at = None  # a zero quota never frees up
    details = {
        "used_gpu_hours": round(used_seconds / 3600, 3),
        "limit_gpu_hours": limit,
        "window": "1d" if window == "day" else f"{WEEK_DAYS}d",
        "resets_at": resets_at.isoformat() if resets_at else None,
    }
    if resets_at is None:
        per = "a day" if window == "day" else f"per {WEEK_DAYS} days"
        message = f"no GPU time: your quota is 0 GPU-hours {per}"
    else:
        period = "today (UTC)" if window == "day" else f"in the last {WEEK_DAYS} days"
        message = (
            f"GPU quota used up: {used_seconds / 3600:.1f} of {limit:g} GPU-hours {period}; "
            f"more becomes available from {_clock(resets_at, date_too=True)}"
        )
    return Refusal("gpu-quota", message, details, resets_at)


def session_verdict(
    limits: Limits, runtime_type: str, started_at: datetime, now: datetime
) -> Verdict | None:
    """Stop a runtime older than its type's maximum session age; warn 15 min before."""
    hours = limits.session_hours(runtime_type)
    if hours is None:
        return None
    limit = timedelta(hours=hours)
    age = utc(now) - utc(started_at)
    stop_at = utc(started_at) + limit
    details = {
        "runtime_type": runtime_type,
        "age_seconds": round(age.total_seconds()),
        "limit_hours": hours,
        "stop_at": stop_at.isoformat(),
    }
    runtime, length = f"your {_label(runtime_type)} runtime", _duration(limit)
    if age >= limit:
        message = f"{runtime} was stopped after {length}, the maximum session length"
        return Verdict("stop", "max-session-age", message, details)
    if age >= limit - SESSION_WARNING:
        message = (
            f"{runtime} will be stopped at {_clock(stop_at)} (in {_duration(stop_at - utc(now))}): "
            f"{length} is the maximum session length; save your work"
        )
        return Verdict("warn", "max-session-age", message, details)
    return None


def idle_verdict(
    limits: Limits,
    last_activity: datetime,
    gpu_util_recent: float | None,
    kernel_busy: bool,
    now: datetime,
) -> Verdict | None:
    """Stop a runtime idle for ``idle_minutes``; warn 10 min before.

    Idle means: no activity since ``last_activity``, no kernel busy and, for a
    GPU runtime, its GPU at about 0 %: ``gpu_util_recent`` is the highest
    utilization (0..1) seen over the idle window, ``None`` for runtimes without
    a GPU. A GPU kept busy by a background job is not idle, whatever the notebook does.
    """
    if limits.idle_minutes is None or kernel_busy:
        return None
    if gpu_util_recent is not None and gpu_util_recent > IDLE_GPU_UTIL:
        return None
    limit = timedelta(minutes=limits.idle_minutes)
    idle_for = utc(now) - utc(last_activity)
    stop_at = utc(last_activity) + limit
    details: dict[str, Any] = {
        "idle_seconds": round(idle_for.total_seconds()),
        "limit_minutes": limits.idle_minutes,
        "gpu_util": gpu_util_recent,
        "stop_at": stop_at.isoformat(),
    }
    quiet = "no kernel activity" + ("" if gpu_util_recent is None else " and its GPU unused")
    if idle_for >= limit:
        message = f"your runtime was stopped after {_duration(limit)} idle ({quiet})"
        return Verdict("stop", "idle", message, details)
    if idle_for >= limit - IDLE_WARNING:
        left = _duration(stop_at - utc(now))
        message = (
            f"your runtime will be stopped at {_clock(stop_at)} (in {left}) "
            f"if it stays idle: {quiet} for {_duration(idle_for)}"
        )
        return Verdict("warn", "idle", message, details)
    return None


def _label(runtime_type: str) -> str:
    return runtime_type.upper() if runtime_type in ("cpu", "gpu", "tpu") else f'"{runtime_type}"'


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"


def _clock(moment: datetime, date_too: bool = False) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC" if date_too else "%H:%M UTC")


def _duration(span: timedelta) -> str:
    """Whole minutes, rounded up, as "90 min", "12 h" or "1 h 30 min"."""
    minutes = math.ceil(span.total_seconds() / 60)
    if minutes < 60 or (minutes < 180 and minutes % 60):
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if not rest else f"{hours} h {rest} min"
