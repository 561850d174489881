"""What the notebook's Runtime menu and resources panel show of a user's runtimes:

    GET /hub/api/kernelhub/users/{user}/runtimes
        {"runtimes": [{"name", "label", "runtime_type", "runtime_type_label", "status",
                       "ready", "started", "age", "time_left", "stop_at",
                       "idle_stop_at", "idle_warning", "url"}],
         "note": "...",
         "quota": null | {"gpu_hours_week_used", "gpu_hours_week_limit",
                          "gpu_hours_week_left", "week_resets"}}

The rows are the hub home page's (``home.py``: the same type, age and time left
before the maximum session). ``idle_stop_at`` is when the quota daemon's idle rule
stops the runtime if nothing happens (its last activity, the newest of the hub's
record and the runtime's kernel report, plus the user's ``idle_minutes``; none while
a kernel is busy), and ``idle_warning`` whether the daemon warns about it by now.
``quota`` is the quota service's own summary (``kernelhub.quotas.api_model.summary``)
of the rolling week, read from the same store, so the notebook's quota bar and
``GET /services/kernelhub-quotas/api/user`` agree; null without a quota daemon or
while the store cannot be read.

A runtime's own token reads its user's runtimes (it holds ``read:servers!user``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import isoformat
from tornado import web

from kernelhub.executor import run_blocking
from kernelhub.hubapp.errors import http_refusal
from kernelhub.hubapp.home import READ_TIMEOUT_SECONDS, RuntimeRow, home_runtimes
from kernelhub.hubapp.kernel_reports import KernelReport, reports_of
from kernelhub.quotagate.gate import QuotaGate
from kernelhub.runtimes.catalog import user_group_names

if TYPE_CHECKING:
    from kernelhub.quotas.policy import Limits

# as quotas/policy.py: the daemon warns this long before an idle stop
IDLE_WARNING = timedelta(minutes=10)


def idle_stop(
    limits: Limits | str,
    started: datetime | None,
    hub_activity: datetime | None,
    report: KernelReport | None,
    now: datetime,
) -> tuple[datetime | None, bool]:
    """(when the idle rule stops the runtime, whether it warns by now) as the daemon
    judges: ``quotas.cycle.idle`` and ``quotas.policy.idle_verdict``."""
    if isinstance(limits, str) or limits.idle_minutes is None or started is None:
        return None, False
    if report is not None and report.busy:
        return None, False  # a busy kernel is never idle
    last = started
    for t in (hub_activity, report.last_activity if report else None):
        if t is not None and t > last:
            last = t
    stop_at = last + timedelta(minutes=limits.idle_minutes)
    return stop_at, now >= stop_at - IDLE_WARNING


def row_json(
    row: RuntimeRow,
    limits: Limits | str,
    hub_activity: datetime | None,
    report: KernelReport | None,
    now: datetime,
) -> dict[str, Any]:
    idle_at, warning = idle_stop(limits, row.started, hub_activity, report, now)
    return {
        "name": row.name,
        "label": row.label,
        "runtime_type": row.type_name,
        "runtime_type_label": row.type_label,
        "status": row.status,
        "ready": row.ready,
        "started": isoformat(row.started),
        "age": row.age,
        "time_left": row.time_left,
        "stop_at": isoformat(row.stop_at),
        "idle_stop_at": isoformat(idle_at),
        "idle_warning": warning,
        "url": row.url,
    }


def week_quota(summary: dict[str, Any]) -> dict[str, Any]:
    """The quota bar's figures from the quota service's summary of a user."""
    return {
        "gpu_hours_week_used": summary["usage"]["week_gpu_hours"],
        "gpu_hours_week_limit": summary["limits"]["gpu_hours_week"],
        "gpu_hours_week_left": summary["remaining_gpu_hours"]["week"],
        "week_resets": summary["resets"]["week"],
    }


def _read_summary(gate: QuotaGate, user: str, groups: list[str]) -> dict[str, Any]:
    from kernelhub.quotas.api_model import summary

    return summary(gate.store(), user, groups, datetime.now(UTC), contact=gate.contact)


async def user_quota(user: Any) -> dict[str, Any] | None:
    gate = QuotaGate.instance()
    if not gate.db_url:
        return None
    groups = user_group_names(user)  # in the event loop: ORM objects stay on its thread
    try:
        found = await asyncio.wait_for(
            run_blocking(_read_summary, gate, user.name, groups), READ_TIMEOUT_SECONDS
        )
    except Exception as e:  # the panel must render without it
        gate.log.warning("Quota of %s left out of its runtimes: %s", user.name, type(e).__name__)
        return None
    return week_quota(found)


def _hub_activity(user: Any, server_name: str) -> datetime | None:
    orm = user.orm_spawners.get(server_name)
    last = orm.last_activity if orm is not None else None
    return last.replace(tzinfo=UTC) if last is not None and last.tzinfo is None else last


class UserRuntimesAPIHandler(APIHandler):
    """GET a user's runtimes with time left, idle stop and weekly GPU quota."""

    @needs_scope("read:servers")
    async def get(self, user_name: str) -> None:
        user = self.find_user(user_name)
        if user is None:
            raise http_refusal(f"no such user: {user_name!r}", 404)
        found = await home_runtimes(user)
        now = datetime.now(UTC)
        reports = reports_of(self)
        rows = [
            row_json(
                row,
                found.limits,
                _hub_activity(user, row.name),
                reports.get((user.name, row.name)),
                now,
            )
            for row in found.rows
        ]
        quota = await user_quota(user)
        self.set_header("Cache-Control", "no-store")
        self.write({"runtimes": rows, "note": found.note, "quota": quota})


def user_runtimes_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    return [(r"/api/kernelhub/users/([^/]+)/runtimes", UserRuntimesAPIHandler)]
