"""The hub home page's runtime list: each of the user's runtimes with its type, age,
time left before the maximum session length, and what can be done with it.

Time left is what kernelhub-quotad enforces: the user's effective limits (rules of
the quota store, as the daemon reads them) for the runtime's type, counted from the
moment the runtime started. Without the quota daemon (QuotaGate.db_url empty)
nothing stops runtimes for their age, and the page says so. The page renders
whatever the store does: a failing or slow read shows "unknown" and is logged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kernelhub.contract import RUNTIME_OPTION
from kernelhub.executor import run_blocking
from kernelhub.hubapp.warm import prepare_warm_runtime
from kernelhub.quotagate.gate import QuotaGate
from kernelhub.runtimes.catalog import RuntimeCatalog, user_group_names

if TYPE_CHECKING:
    from kernelhub.quotas.policy import Limits

READ_TIMEOUT_SECONDS = 5.0  # as the notices: a hanging store must not hang the page

QUOTAS_OFF = "off"  # no quota daemon: no maximum session length
UNREADABLE = "unreadable"  # the quota store could not be read just now

NOTES = {
    QUOTAS_OFF: "This hub sets no maximum session length: runtimes run until stopped.",
    UNREADABLE: "Session limits cannot be read right now; time left is unknown.",
}


@dataclass(frozen=True)
class ServerState:
    """One of the user's servers as the hub's database has it (read in the event loop)."""

    name: str  # "" is the default server
    display_name: str
    runtime: str  # user_options' runtime type name; "" when never chosen
    started: datetime | None  # aware, UTC; None unless running
    active: bool  # running, starting or stopping
    ready: bool
    pending: str  # "spawn", "stop", ... or ""


@dataclass(frozen=True)
class RuntimeRow:
    """A row of the home page's runtime table; the template escapes every text."""

    name: str
    label: str
    type_name: str
    type_label: str
    status: str  # "running", "starting", "stopping", "stopped"
    active: bool
    ready: bool
    started: datetime | None
    age: str  # "" unless running
    time_left: str  # "" unless running
    stop_at: datetime | None
    url: str  # the runtime (Notebook 7)
    spawn_url: str  # the "Change runtime type" form for this server

    @property
    def started_iso(self) -> str:
        return self.started.isoformat() if self.started else ""

    @property
    def stop_at_utc(self) -> str:
        return self.stop_at.strftime("%Y-%m-%d %H:%M UTC") if self.stop_at else ""


@dataclass(frozen=True)
class HomeRuntimes:
    rows: list[RuntimeRow]
    note: str  # why time left is absent or unknown; "" when it is known
    limits: Limits | str  # the user's effective limits, or QUOTAS_OFF / UNREADABLE


def format_span(span: timedelta) -> str:
    """A duration for people: "under a minute", "5 min", "2 h 5 min", "3 d 4 h"."""
    minutes = int(span.total_seconds() // 60)
    if minutes < 1:
        return "under a minute"
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def status_of(state: ServerState) -> str:
    if state.pending == "stop":
        return "stopping"
    if state.ready:
        return "running"
    return "starting" if state.active else "stopped"


def time_left(
    limits: Limits | str, runtime_type: str, started: datetime, now: datetime
) -> tuple[str, datetime | None]:
    """(text, stop time) for a runtime of ``runtime_type`` started at ``started``.

    ``limits`` is the user's effective Limits, or QUOTAS_OFF / UNREADABLE."""
    if limits == QUOTAS_OFF:
        return "no limit", None
    if isinstance(limits, str):
        return "unknown", None
    hours = limits.session_hours(runtime_type)
    if hours is None:
        return "no limit", None
    stop_at = started + timedelta(hours=hours)
    left = stop_at - now
    return ("stopping now" if left <= timedelta(0) else format_span(left)), stop_at


def build_rows(
    states: Sequence[ServerState],
    type_labels: Mapping[str, str],
    default_type: str,
    limits: Limits | str,
    now: datetime,
    server_url: Callable[[str], str],
    spawn_url: Callable[[str], str],
) -> list[RuntimeRow]:
    """Rows for ``states``: the default server first, then named servers by name."""
    rows = []
    for state in sorted(states, key=lambda s: (s.name != "", s.name)):
        status = status_of(state)
        running = state.active and state.started is not None
        # a runtime started without a type got the catalog's default (as the daemon counts)
        type_name = state.runtime or (default_type if state.active else "")
        age = left = ""
        stop_at = None
        if running and state.started is not None:
            age = format_span(now - state.started)
            left, stop_at = time_left(limits, type_name, state.started, now)
        rows.append(
            RuntimeRow(
                name=state.name,
                label=state.display_name or state.name or "Default",
                type_name=type_name,
                type_label=type_labels.get(type_name, type_name) or "not chosen yet",
                status=status,
                active=state.active,
                ready=state.ready,
                started=state.started if running else None,
                age=age,
                time_left=left,
                stop_at=stop_at,
                url=server_url(state.name),
                spawn_url=spawn_url(state.name),
            )
        )
    return rows


def server_states(user: Any) -> list[ServerState]:
    """The user's servers, the default one always included (it is made on first use)."""
    # as JupyterHub's home page: user.spawners drops named servers once stopped
    orm_spawners = {s.name: s for s in user.orm_user._orm_spawners}
    states = []
    for name in sorted({"", *orm_spawners}):
        orm = orm_spawners.get(name)
        spawner = user.spawners.get(name)  # a plain lookup: [] would make a spawner
        started = orm.started if orm is not None and orm.server is not None else None
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=UTC)  # naive UTC in the hub's database
        options = (orm.user_options if orm is not None else None) or {}
        states.append(
            ServerState(
                name=name,
                display_name=str(getattr(orm, "display_name", "") or ""),
                runtime=str(options.get(RUNTIME_OPTION) or ""),
                started=started,
                active=bool(spawner and spawner.active),
                ready=bool(spawner and spawner.ready),
                pending=str(getattr(spawner, "pending", "") or ""),
            )
        )
    return states


async def user_limits(user: Any) -> Limits | str:
    """The user's effective limits from the quota store, or QUOTAS_OFF / UNREADABLE."""
    gate = QuotaGate.instance()
    if not gate.db_url:
        return QUOTAS_OFF
    groups = user_group_names(user)  # in the event loop: ORM objects stay on its thread
    try:
        return await asyncio.wait_for(
            run_blocking(_read_limits, gate, user.name, groups), READ_TIMEOUT_SECONDS
        )
    except Exception as e:  # anything at all: the home page must render
        gate.log.warning(
            "Session limits for %s left out of the home page (quota store unreadable): %s",
            user.name,
            f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
        )
        return UNREADABLE


def _read_limits(gate: QuotaGate, user: str, groups: list[str]) -> Limits:
    from kernelhub.quotas.policy import effective_limits

    return effective_limits(*gate.store().rules_for(user, groups))


async def home_runtimes(user: Any) -> HomeRuntimes:
    catalog = RuntimeCatalog.instance()
    states = server_states(user)
    prepare_warm_runtime(user)
    hub = user.settings.get("hub")
    hub_base = hub.base_url if hub is not None else "/hub/"
    user_path = quote(user.name, safe="")

    def spawn_url(name: str) -> str:
        return f"{hub_base}spawn/{user_path}" + (f"/{quote(name, safe='')}" if name else "")

    running = any(s.active for s in states)
    limits: Limits | str = await user_limits(user) if running else QUOTAS_OFF
    rows = build_rows(
        states,
        {t.name: t.display_name for t in catalog.types},
        catalog.default_runtime,
        limits,
        datetime.now(UTC),
        user.server_url,
        spawn_url,
    )
    note = NOTES.get(limits, "") if running and isinstance(limits, str) else ""
    return HomeRuntimes(rows, note, limits)


def runtimes_template_var(user: Any) -> Callable[[], Awaitable[HomeRuntimes]]:
    """The ``kernelhub_runtimes`` template variable, called (and awaited) by home.html
    only: JupyterHub evaluates template_vars for every page."""
    return functools.partial(home_runtimes, user)
