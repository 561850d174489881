"""Kernel state that each runtime reports about itself, for the quota daemon.

The quota daemon needs to know whether a runtime's kernels are executing (a busy
kernel is not idle). It used to ask every server's ``/api/kernels`` through the
proxy with its own token, which handed a token able to stop everyone's servers to
code each user controls. Now the flow runs the other way, with no privilege leaving
the hub: each runtime's server extension (``kernelhub_snippets.kernel_reports``)
POSTs its own kernels' state here with its own server token, and the daemon reads
all reports in one GET from the hub.

    POST /hub/api/kernelhub/users/{user}/servers/{server}/kernels
         {"busy": bool, "last_activity": "2026-01-01T00:00:00Z" | null}    -> 204
    GET  /hub/api/kernelhub/kernel-reports
         {"now": ISO, "reports": [{"user", "server", "busy", "last_activity",
                                   "reported"}]}

A report says something only about the server it names, which must be running (or
starting), and only a token holding ``users:activity`` for its user and
``access:servers`` for that very server may send it: a runtime's own token holds
both for itself and for no other server, so a runtime can misreport only itself.
Reading needs ``read:users:activity`` on every user (the quota service's
``read:users``); a user's token, filtered to themselves, is refused.

Reports live in the hub's memory, one per server, and never outlive the server they
describe: one received before the server's current start, or for a server that is
no longer active, is dropped as it is read. After a hub restart the runtimes'
heartbeats fill them in again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope, needs_scope
from jupyterhub.utils import isoformat
from tornado import web

from kernelhub.contract import runtime_key
from kernelhub.hubapp.errors import http_refusal

MAX_BODY = 1024  # bytes: {"busy": false, "last_activity": "..."} is well under 100
MAX_TIME_TEXT = 40  # characters of an ISO 8601 time: "2026-01-01T00:00:00.000000+00:00"
FIELDS = frozenset({"busy", "last_activity"})
SETTINGS_KEY = "kernelhub_kernel_reports"
LOOKUP_BATCH = 500  # user names per query: well under any database's parameter limit


@dataclass(frozen=True)
class KernelReport:
    """What one runtime said of its kernels, and when the hub heard it (UTC)."""

    busy: bool
    last_activity: datetime | None
    received: datetime

    def to_json(self, user: str, server: str) -> dict[str, Any]:
        return {
            "user": user,
            "server": server,
            "busy": self.busy,
            "last_activity": isoformat(self.last_activity),
            "reported": isoformat(self.received),
        }


def parse_report(body: bytes, now: datetime) -> KernelReport:
    """A report from a request body, or an ``http_refusal`` saying what is wrong.

    Strict, since the body is written by code the user controls: a JSON object of
    exactly ``busy`` (true/false) and ``last_activity`` (an ISO 8601 time with its
    offset, or null); a time in the future is taken as now.
    """
    if len(body) > MAX_BODY:
        raise http_refusal(f"a kernel report is at most {MAX_BODY} bytes", 413)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise http_refusal("the request body must be JSON") from None
    if not isinstance(data, dict) or set(data) != FIELDS:
        raise http_refusal('a kernel report is a JSON object {"busy": ..., "last_activity": ...}')
    busy, last = data["busy"], data["last_activity"]
    if not isinstance(busy, bool):
        raise http_refusal('"busy" must be true or false')
    return KernelReport(busy, _report_time(last, now), now)


def _report_time(value: Any, now: datetime) -> datetime | None:
    if value is None:
        return None
    what = '"last_activity" must be null or an ISO 8601 time with its UTC offset'
    if not isinstance(value, str) or len(value) > MAX_TIME_TEXT:
        raise http_refusal(what)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise http_refusal(what) from None
    if when.tzinfo is None:
        raise http_refusal(what)
    return min(when.astimezone(UTC), now)  # a clock ahead of the hub's is not "later"


def reports_of(handler: APIHandler) -> dict[tuple[str, str], KernelReport]:
    """The hub's reports by (user, server): one dict in the tornado settings, shared
    by every request of this hub process."""
    found: dict[tuple[str, str], KernelReport] = handler.settings.setdefault(SETTINGS_KEY, {})
    return found


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _started(spawner: Any) -> datetime | None:
    """The server's current start (the hub stores naive UTC), or None when stopped."""
    started = spawner.orm_spawner.started if spawner.orm_spawner is not None else None
    return started.replace(tzinfo=UTC) if started is not None else None


class KernelReportAPIHandler(APIHandler):
    """POST: a runtime reports its own kernels' state (see the module docstring)."""

    # post_filter: let through any token holding users:activity for someone; the
    # checks below say for whom. JupyterHub's filtered form would answer 404 to a
    # forged report, and a refusal should say what it is
    @needs_scope("users:activity", post_filter=True)
    async def post(self, for_user: str, for_server: str) -> None:
        # a token acting for this user, and coming from this very server (a runtime's
        # token alone holds access:servers on it): one of a user's runtimes cannot
        # speak for another, nor for anyone else's
        for scope in (
            f"users:activity!user={for_user}",
            f"access:servers!server={for_user}/{for_server}",
        ):
            if not has_scope(scope, self.parsed_scopes, db=self.db):
                raise http_refusal(f"this token may not report for {for_user}/{for_server}", 403)
        user = self.find_user(for_user)
        spawner = None
        if user is not None and for_server in user.orm_spawners:
            spawner = user.spawners[for_server]
        if spawner is None or not spawner.active:
            raise http_refusal(f"{for_user} has no server {for_server!r} running", 404)
        report = parse_report(self.request.body, _utcnow())  # refused: nothing is stored
        reports_of(self)[(for_user, for_server)] = report
        self.set_status(204)


class KernelReportsAPIHandler(APIHandler):
    """GET every active server's latest report (the quota daemon's one read)."""

    @needs_scope("read:users:activity")  # unfiltered: a user's own token is refused
    async def get(self) -> None:
        reports = reports_of(self)
        users = self._find_users({user_name for user_name, _ in reports})
        listed = []
        for (user_name, server_name), report in list(reports.items()):
            if self._current(users.get(user_name), server_name, report):
                listed.append(report.to_json(user_name, server_name))
            else:
                reports.pop((user_name, server_name), None)  # its server stopped
        listed.sort(key=lambda r: runtime_key(r["user"], r["server"]))
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({"now": isoformat(_utcnow()), "reports": listed}))

    def _find_users(self, names: set[str]) -> dict[str, Any]:
        """The hub's users of these names, in a query per LOOKUP_BATCH names: the daemon
        reads every cycle, and a query per report (find_user) held the hub's event loop
        for each of the runtimes in turn."""
        found: dict[str, Any] = {}
        ordered = sorted(names)
        for start in range(0, len(ordered), LOOKUP_BATCH):
            batch = ordered[start : start + LOOKUP_BATCH]
            for orm_user in self.db.query(orm.User).filter(orm.User.name.in_(batch)):
                found[orm_user.name] = self._user_from_orm(orm_user)
        return found

    def _current(self, user: Any, server_name: str, report: KernelReport) -> bool:
        """The report describes the server running now (not an earlier run of it)."""
        if user is None or server_name not in user.orm_spawners:
            return False
        spawner = user.spawners[server_name]
        started = _started(spawner)
        return bool(spawner.active) and started is not None and report.received >= started


def kernel_report_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """Routes relative to the hub prefix (``kernelhub_api_handlers`` adds them)."""
    return [
        (r"/api/kernelhub/users/([^/]+)/servers/([^/]*)/kernels", KernelReportAPIHandler),
        (r"/api/kernelhub/kernel-reports", KernelReportsAPIHandler),
    ]
