"""The quota API's request parsing and response bodies: pure functions of their inputs.

Every parsing mistake is an ``ApiError`` (HTTP 4xx) whose message names the field.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from typing import Any

from tornado import web

from kernelhub.quotas.disclosure import DEFAULT_CONTACT, disclose
from kernelhub.quotas.policy import LIMIT_FIELDS, UNLIMITED, WEEK_DAYS, Rule, Scope, midnight
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.usage import read_usage

MAX_NAME = 255  # the store's column width
MAX_LIMIT = 1_000_000  # far above any sensible quota; keeps numbers sane for both databases
MAX_SINCE_DAYS = 3660
INTEGER_FIELDS = ("max_concurrent", "max_gpus")
POSITIVE_FIELDS = ("max_session_hours", "idle_minutes")  # 0 would stop runtimes at once


class ApiError(web.HTTPError):
    """An error whose message the client sees verbatim."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, "%s", message)
        self.message = message


def summary(
    store: QuotaStore,
    user: str,
    groups: list[str],
    now: datetime,
    admin: bool = False,
    contact: str = DEFAULT_CONTACT,
) -> dict[str, Any]:
    """Usage, limits, what is left and when it comes back: one user's quota at a glance.

    The flag as ``disclose`` shows it: its reason only to an ``admin``.
    """
    usage = read_usage(store, user, groups, now)
    today, limits, rules, flag = now.date(), usage.limits, usage.rules, usage.flag
    day_hours, week_hours = usage.day_gpu_seconds / 3600, usage.week_gpu_seconds / 3600
    refusal = usage.spawn_refusal(running_count=0, requested_gpus=1, contact=contact)
    left = {
        "day": _left(limits.gpu_hours_day, day_hours),
        "week": _left(limits.gpu_hours_week, week_hours),
    }
    known = [v for v in left.values() if v is not None]
    oldest = min((d for d, s in usage.gpu_seconds_by_day.items() if s > 0), default=None)
    return {
        "user": user,
        "groups": groups,
        "now": now.isoformat(),
        "usage": {
            "today_gpu_hours": round(day_hours, 4),
            "week_gpu_hours": round(week_hours, 4),
            "week_since": usage.week_since.isoformat(),
            "by_runtime_type": usage.by_runtime_type(),
        },
        "limits": {name: _limit_json(getattr(limits, name)) for name in LIMIT_FIELDS},
        "remaining_gpu_hours": {**left, "now": min(known) if known else None},
        "resets": {
            "day": midnight(today + timedelta(days=1)).isoformat(),
            # when the oldest usage in the rolling week leaves it
            "week": midnight(oldest + timedelta(days=WEEK_DAYS)).isoformat() if oldest else None,
        },
        "gpu_refusal": None
        if refusal is None
        else {
            "reason": refusal.reason,
            "message": refusal.message,
            "resets_at": refusal.resets_at.isoformat() if refusal.resets_at else None,
        },
        "flag": disclose(flag, admin=admin, contact=contact) if flag else None,
        "rules": {
            "default": rule_json(rules.default) if rules.default else None,
            "groups": [rule_json(r) for r in rules.groups],
            "user": rule_json(rules.user) if rules.user else None,
        },
    }


def parse_since(text: str, now: datetime) -> datetime:
    """``Nd`` (today and the N-1 days before, UTC) or ``YYYY-MM-DD``; start of that day."""
    if len(text) > 10:
        raise ApiError(400, f"since: a date (YYYY-MM-DD) or days (e.g. 7d), not {text[:20]!r}")
    if text.endswith("d") and text[:-1].isdigit() and text[:-1].isascii():
        days = int(text[:-1])
        if not 1 <= days <= MAX_SINCE_DAYS:
            raise ApiError(400, f"since: between 1d and {MAX_SINCE_DAYS}d, not {text!r}")
        return midnight(now.date() - timedelta(days=days - 1))
    try:
        if len(text) != 10:
            raise ValueError(text)
        return midnight(date.fromisoformat(text))
    except ValueError:
        raise ApiError(400, f"since: a date (YYYY-MM-DD) or days (e.g. 7d), not {text!r}") from None


def parse_rule(body: dict[str, Any], scope: Scope, subject: str) -> Rule:
    """A rule from a PUT body; every mistake is a 400 naming the field."""
    no_unknown(body, set(LIMIT_FIELDS))
    values: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name == "max_session_hours":
            if not isinstance(value, dict):
                raise ApiError(400, "max_session_hours must be an object: runtime type -> hours")
            for kind, hours in value.items():
                if not 1 <= len(kind) <= 64:
                    raise ApiError(400, "max_session_hours: runtime type names have 1-64 chars")
                _check_limit(f"max_session_hours[{kind!r}]", hours, integer=False, positive=True)
            values[name] = dict(value)
        else:
            integer = name in INTEGER_FIELDS
            values[name] = _check_limit(name, value, integer, positive=name in POSITIVE_FIELDS)
    try:
        return Rule(scope=scope, subject=subject, **values)
    except ValueError as e:  # the policy's own checks, should ours miss one
        raise ApiError(400, str(e)) from None


def _check_limit(name: str, value: Any, integer: bool, positive: bool) -> float:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{name} must be {kind}, not {json.dumps(value)[:40]}")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ApiError(400, f"{name} must be {kind}, not {value}")
    if value == UNLIMITED:
        return UNLIMITED
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > MAX_LIMIT:
        low = "> 0" if positive else ">= 0"
        raise ApiError(
            400, f"{name} must be {low} and at most {MAX_LIMIT}, or {UNLIMITED} (unlimited)"
        )
    return int(value) if integer else float(value)


def no_unknown(body: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}",
        )


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json would accept NaN and Infinity


def _left(limit: float | None, used: float) -> float | None:
    return None if limit is None else round(max(limit - used, 0.0), 4)


def _limit_json(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def rule_json(rule: Rule) -> dict[str, Any]:
    body = {"scope": rule.scope, "subject": rule.subject}
    return {**body, **{name: _limit_json(getattr(rule, name)) for name in LIMIT_FIELDS}}


def describe(scope: Scope, subject: str) -> str:
    return "the default" if scope == "default" else f"{scope} {subject!r}"
