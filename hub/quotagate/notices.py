"""Quota notices on the hub home page: pending warnings, recent stops, the account flag.

kernelhub-quotad warns before it stops where the rule allows, stops runtimes
through the hub API and records each warning and stop, with the message the user
is meant to read, in the quota store. The hub reads that store (the same one
QuotaGate opens) when the home page renders, so the user learns why a runtime is
gone on the next visit, and what is about to happen to a running one.

The page must render whatever the store does: a failing or slow read is logged
and the page shows no notices.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kernelhub.executor import run_blocking
from kernelhub.quotagate.gate import QuotaGate
from kernelhub.runtimes.catalog import user_group_names

# events older than this are not read: warnings belong to sessions that the session
# length rules end well before, and stops older than STOPS_SHOWN_FOR are not shown
EVENT_WINDOW = timedelta(days=7)
# a stop is shown for a day (unless dismissed): long enough to be seen on the next
# visit, short enough not to nag; dismissing is remembered by the browser
STOPS_SHOWN_FOR = timedelta(hours=24)
# a store that hangs (PostgreSQL unreachable) must not hang the home page
READ_TIMEOUT_SECONDS = 5.0

NoticeKind = Literal["warn", "stop", "flag"]


@dataclass(frozen=True)
class Notice:
    """One alert on the home page; the template escapes every text field."""

    kind: NoticeKind
    time: datetime  # aware, UTC
    message: str
    server: str = ""  # "" is the default server
    runtime_type: str = ""  # the runtime type's display name
    reason: str = ""  # the daemon's reason code ("max-session-age", "idle", ...)
    event_id: int | None = None  # what a dismissed stop is remembered by

    @property
    def level(self) -> str:
        """The Bootstrap alert style."""
        return "warning" if self.kind == "warn" else "danger"

    @property
    def title(self) -> str:
        return {
            "warn": "Runtime warning",
            "stop": "Runtime stopped",
            "flag": "GPU runtimes blocked",
        }[self.kind]

    @property
    def server_label(self) -> str:
        return self.server or "default server"

    @property
    def time_utc(self) -> str:
        return self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def to_json(self) -> dict[str, Any]:
        """For the notices API (and the notebook, which shows them there too)."""
        return {
            "id": f"{self.kind}-{self.event_id}" if self.event_id is not None else self.kind,
            "kind": self.kind,
            "title": self.title,
            "time": self.time.astimezone(UTC).isoformat(),
            "message": self.message,
            "server": self.server,
            "runtime_type": self.runtime_type,
            "reason": self.reason,
        }

    @property
    def dismissible(self) -> bool:
        # warnings disappear with their runtime and the flag with the admin's review;
        # only stops are news that the user may want out of the way
        return self.kind == "stop" and self.event_id is not None


@dataclass(frozen=True)
class RunningServer:
    """What a warning needs to know about one of the user's running servers."""

    name: str
    started: datetime | None  # aware, UTC


async def quota_notices(user: Any) -> list[Notice]:
    """The notices for ``user`` (a JupyterHub User); [] when the store cannot be read."""
    gate = QuotaGate.instance()
    if not gate.db_url or user is None:
        return []
    # read in the event loop: the hub's ORM objects are not safe to touch from a thread
    running = running_servers(user)
    groups = user_group_names(user)
    now = datetime.now(UTC)
    try:
        events, flag = await asyncio.wait_for(
            run_blocking(_read_store, gate, user.name, groups, now),
            READ_TIMEOUT_SECONDS,
        )
        return build_notices(events, flag, running, now, _runtime_display_names())
    except Exception as e:  # anything at all: notices must never break the home page
        gate.log.warning(
            "Quota notices for %s left out (quota store unreadable): %s",
            user.name,
            f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
        )
        return []


def notices_template_var(user: Any) -> Callable[[], Awaitable[list[Notice]]]:
    """The ``kernelhub_notices`` template variable: what home.html calls (and Jinja's
    async mode awaits). A function rather than the list, because JupyterHub
    evaluates template_vars for every page it renders, and only the home page
    should read the store."""
    return functools.partial(quota_notices, user)


def _read_store(
    gate: QuotaGate, user: str, groups: list[str], now: datetime
) -> tuple[list[Any], Any]:
    from kernelhub.quotas.usage import read_usage  # as the gate: only with a store to read

    store = gate.store()
    # the flag as the spawn check reads it: a GPU block shows here exactly when
    # GPU spawns are refused for it
    usage = read_usage(store, user, groups, now)
    return store.events(user=user, since=now - EVENT_WINDOW), usage.flag


def running_servers(user: Any) -> dict[str, RunningServer]:
    """The user's servers that have a server process (running, or starting/stopping)."""
    servers = {}
    for name, orm_spawner in user.orm_user.orm_spawners.items():
        if orm_spawner.server is None:
            continue
        started = orm_spawner.started  # naive UTC in the hub's database
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        servers[name] = RunningServer(name, started)
    return servers


def _runtime_display_names() -> dict[str, str]:
    from kernelhub.runtimes.catalog import RuntimeCatalog

    return {t.name: t.display_name for t in RuntimeCatalog.instance().types}


def build_notices(
    events: Iterable[Any],
    flag: Any,
    running: Mapping[str, RunningServer],
    now: datetime,
    display_names: Mapping[str, str] | None = None,
) -> list[Notice]:
    """Notices from one user's events (oldest first) and flag; newest first, flag on top.

    - a warning is pending while its server is still running the session it was
      given in (not one started after it) and no stop for that server followed;
    - a stop is shown for STOPS_SHOWN_FOR;
    - a flag that blocks GPU runtimes is shown while it stands, as
      ``disclosure.disclose`` shows it to its user: its stored reason (the detector's
      explanation) stays with administrators, since it would tell a miner which
      signals to avoid.
    """
    names = display_names or {}
    events = list(events)
    last_stop: dict[str, datetime] = {}
    for event in events:
        if event.kind == "stop":
            last_stop[event.server] = max(event.time, last_stop.get(event.server, event.time))

    notices: list[Notice] = []
    seen_warnings: set[tuple[str, str]] = set()
    for event in reversed(events):  # newest first
        notice = Notice(
            kind=event.kind,
            time=event.time,
            message=event.message,
            server=event.server,
            runtime_type=names.get(event.runtime_type, event.runtime_type),
            reason=event.reason,
            event_id=event.id,
        )
        if event.kind == "stop" and event.time >= now - STOPS_SHOWN_FOR:
            notices.append(notice)
        elif event.kind == "warn":
            server = running.get(event.server)
            if server is None or (server.started is not None and event.time < server.started):
                continue
            if event.server in last_stop and last_stop[event.server] >= event.time:
                continue
            key = (event.server, event.reason)
            if key not in seen_warnings:  # one per reason: the newest
                seen_warnings.add(key)
                notices.append(notice)

    if flag is not None and flag.block_gpu:
        from kernelhub.quotas.disclosure import disclose  # as _read_store: with a store only

        # the user's view of the flag, as the spawn refusal and the quota API give it
        message = disclose(flag, admin=False, contact=None)["message"]
        notices.insert(0, Notice(kind="flag", time=flag.flagged_at, message=message))
    return notices
