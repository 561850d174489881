"""Change a running runtime's type: Colab's Runtime -> Change runtime type -> Save.

    POST /hub/api/kernelhub/users/{user}/servers/{server}/switch  {"runtime_type": "cpu-large"}
         -> 202 {"status", "message", "runtime_type", "switch_url"}
         -> 200 {"status", "message", "runtime_type", "switch_url": null} (already that type)
    GET  /hub/kernelhub/switch/{user}/{server}?next=/user/alice/notebooks/x.ipynb
         (a page: waits until the old runtime is gone, then JupyterHub's progress page,
          which opens ``next`` once the new runtime is ready)

The same server name is stopped and started again with the new ``user_options``, as
JupyterHub 6's server PATCH does for a stopped server: the drive, and so every file,
stays. The request is checked first, under the user's admission lock, by the very
checks a start goes through (the catalog's availability, groups and runtime limit,
then the quota store); a refusal is answered at once with its reason, and the
running runtime is left alone. Only an admitted switch stops anything.

The answer goes out before the old runtime stops, since the notebook usually asks
through that runtime (``kernelhub_snippets.runtime_menu``, with its own token) and
its reply would be lost with it. The page above bridges the moment between the stop
and the new start, when JupyterHub's own progress page would say "not running".

Who may switch: a token or session holding ``servers`` for the user, such as the
user, or a runtime's own token (kernelhub gives it ``servers!user``: its user's own
servers and nobody else's). JupyterHub's scope filter answers 404 for other users.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from kernelhub.contract import RUNTIME_OPTION, runtime_key
from kernelhub.hubapp.errors import http_refusal, json_object
from kernelhub.quotagate.gate import check_quota
from kernelhub.runtimes.catalog import RuntimeCatalog
from kernelhub.runtimes.types import RuntimeRequestError

STOP_WAIT_SECONDS = 120.0  # the page waits this long for the old runtime to go
MAX_TYPE_NAME = 64
SETTINGS_KEY = "kernelhub_runtime_switches"


@dataclass
class Switch:
    """One switch under way: the page waits on ``starting``."""

    runtime_type: str
    starting: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""  # why it failed before the new start began


def switches_of(handler: web.RequestHandler) -> dict[str, Switch]:
    """Switches under way, by runtime key: one dict per hub process."""
    found: dict[str, Switch] = handler.settings.setdefault(SETTINGS_KEY, {})
    return found


def switch_page_path(hub_base: str, user: str, server: str) -> str:
    return f"{hub_base}kernelhub/switch/{quote(user, safe='')}/{quote(server, safe='')}"


class RuntimeSwitchAPIHandler(APIHandler):
    """POST: switch a running runtime to another runtime type (module docstring)."""

    @needs_scope("servers")
    async def post(self, user_name: str, server_name: str) -> None:
        user = self.find_user(user_name)
        if user is None:
            raise http_refusal(f"no such user: {user_name!r}", 404)
        body = json_object(self, frozenset({"runtime_type"}))
        wanted = body.get("runtime_type")
        if not isinstance(wanted, str) or not 0 < len(wanted) <= MAX_TYPE_NAME:
            raise http_refusal('"runtime_type" must be the name of a runtime type')
        spawner = user.spawners.get(server_name) if server_name in user.orm_spawners else None
        label = f"runtime {server_name!r}" if server_name else "the default runtime"
        if spawner is None or not spawner.ready or spawner.pending:
            state = f"is {spawner.pending}ing" if spawner and spawner.pending else "is not running"
            raise http_refusal(f"{label} {state}; start it with the type you want instead", 409)
        key = runtime_key(user.name, server_name)
        switches = switches_of(self)
        if key in switches:
            raise http_refusal(f"{label} is already switching to {switches[key].runtime_type}", 409)
        current = dict(user.orm_spawners[server_name].user_options or {})
        catalog = RuntimeCatalog.instance()
        if current.get(RUNTIME_OPTION, catalog.default_runtime) == wanted:
            self.write(
                {
                    "status": 200,
                    "message": f"{label} is already of type {wanted}",
                    "runtime_type": wanted,
                    "switch_url": None,
                }
            )
            return
        options = {**current, RUNTIME_OPTION: wanted}
        async with catalog.admissions.lock(user.name):
            if catalog.admissions.in_flight(user, server_name):
                raise http_refusal(f"{label} is being started by another request", 409)
            try:  # the checks a start makes, before anything is stopped
                runtime_type = catalog.admit_for(user, server_name, options)
                await check_quota(user, server_name, runtime_type)
            except RuntimeRequestError as e:
                self.log.info("Refused switch of %s to %s: %s", key, wanted, e.message)
                raise http_refusal(e.message, e.status) from None
            catalog.admissions.add(user.name, server_name, runtime_type)
        switch = switches[key] = Switch(runtime_type.name)
        self.log.info("Switching %s to runtime type %s", key, runtime_type.name)
        self.set_status(202)
        self.finish(
            {
                "status": 202,
                "message": f"switching {label} to {runtime_type.display_name or runtime_type.name}",
                "runtime_type": runtime_type.name,
                "switch_url": switch_page_path(self.hub.base_url, user.name, server_name),
            }
        )
        # answered: now the old runtime may go (the handler lives on for the spawn)
        try:
            await self._switch(user, server_name, options, switch)
        finally:
            catalog.admissions.end_request(user, server_name)
            switch.starting.set()
            switches.pop(key, None)

    async def _switch(
        self, user: Any, server_name: str, options: dict[str, Any], switch: Switch
    ) -> None:
        spawner = user.spawners[server_name]
        try:
            await self.stop_single_user(user, server_name)
            # as the server PATCH of a stopped server: the options are the server's own now
            spawner.user_options = options
            spawner.orm_spawner.user_options = options
            self.db.commit()
            spawn = asyncio.ensure_future(
                self.spawn_single_user(user, server_name, options=options)
            )
            while not spawn.done() and spawner.pending != "spawn":
                await asyncio.sleep(0.05)
            switch.starting.set()
            await spawn
        except Exception as e:  # the page and the log say why; the user can start it again
            switch.error = getattr(e, "jupyterhub_message", None) or str(e) or type(e).__name__
            self.log.error("Switching %s/%s failed: %s", user.name, server_name, switch.error)


class RuntimeSwitchPageHandler(BaseHandler):
    """GET: wait for the old runtime to go, then JupyterHub's spawn progress page."""

    @web.authenticated
    @needs_scope("servers")
    async def get(self, user_name: str, server_name: str) -> None:
        switch = switches_of(self).get(runtime_key(user_name, server_name))
        if switch is not None:
            # past the wait, the progress page says what state it is in
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(switch.starting.wait(), STOP_WAIT_SECONDS)
            if switch.error:
                raise http_refusal(f"the runtime could not switch: {switch.error}", 500)
        target = f"{self.hub.base_url}spawn-pending/{quote(user_name, safe='')}"
        if server_name:
            target += f"/{quote(server_name, safe='')}"
        next_url = self.get_argument("next", "")
        # spawn-pending checks ``next`` (same host, under the hub's base) before using it
        self.redirect(f"{target}?{urlencode({'next': next_url})}" if next_url else target)


def runtime_switch_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """Routes relative to the hub prefix (``kernelhub_api_handlers`` adds them)."""
    return [
        (r"/api/kernelhub/users/([^/]+)/servers/([^/]*)/switch", RuntimeSwitchAPIHandler),
        (r"/kernelhub/switch/([^/]+)/([^/]*)", RuntimeSwitchPageHandler),
    ]
