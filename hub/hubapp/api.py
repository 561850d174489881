"""REST endpoints kernelhub adds to (or puts in front of) JupyterHub's API.

Errors are JupyterHub's API errors: JSON ``{"status": ..., "message": ...}``.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from kernelhub.hubapp.errors import http_refusal
from kernelhub.quotagate.gate import check_quota
from kernelhub.quotagate.notices import quota_notices
from kernelhub.runtimes.catalog import RuntimeCatalog, user_group_names
from kernelhub.runtimes.types import RuntimeRequestError


class RuntimeServerAPIHandler(UserServerAPIHandler):
    """JupyterHub's start-server endpoint, refusing bad runtime requests up front.

    JupyterHub would create the (named) server record, store the options as the
    user's future defaults and only then reject them while spawning. Checking
    here first means a refused request leaves no record, process or pending
    server behind. The spawner checks again (same function) as it applies them.

    The check runs under the user's admission lock and an admitted request is
    recorded before the lock is let go, so concurrent requests of one user are
    counted against each other (``max_gpus``, the runtime limit) although none
    has a server yet.
    """

    @needs_scope("start:servers")
    async def post(self, user_name: str, server_name: str = "") -> None:
        user = self.find_user(user_name)
        admitted = user is not None and await self._admit(user, server_name)
        try:
            await super().post(user_name, server_name)
        finally:
            if admitted:
                RuntimeCatalog.instance().admissions.end_request(user, server_name)

    async def _admit(self, user: Any, server_name: str) -> bool:
        """Refuse what the catalog or the quota refuses; else record it as admitted."""
        existing = user.spawners.get(server_name) if server_name in user.orm_spawners else None
        if existing is not None and existing.active:
            return False  # already running or pending: JupyterHub answers that itself
        body = self.get_server_json_body()
        options = body.get("user_options")
        if options is None and server_name in user.orm_spawners:
            options = user.orm_spawners[server_name].user_options or None
        catalog = RuntimeCatalog.instance()
        async with catalog.admissions.lock(user.name):
            if catalog.admissions.in_flight(user, server_name):
                # a request for this very server got here first: JupyterHub answers
                # this one (it is pending), and that spawn is checked as it applies
                return False
            try:
                runtime_type = catalog.admit_for(user, server_name, options)
                await check_quota(user, server_name, runtime_type)
            except RuntimeRequestError as e:
                self.log.info("Refused runtime for %s/%s: %s", user.name, server_name, e.message)
                raise http_refusal(e.message, e.status) from None
            catalog.admissions.add(user.name, server_name, runtime_type)
        return True


class RuntimeTypesAPIHandler(APIHandler):
    """GET the runtime types with their live availability for the requesting user."""

    async def get(self) -> None:
        requester = self.current_user
        if requester is None:
            raise web.HTTPError(403, "sign in or send a valid API token to list runtime types")
        catalog = RuntimeCatalog.instance()
        inventory = catalog.gpus
        discovery = inventory.discovery
        self.write(
            json.dumps(
                {
                    "default": catalog.default_runtime,
                    "runtime_types": catalog.view(user_group_names(requester)).to_json(),
                    "gpus": {
                        "source": discovery.source if discovery else "none",
                        "total": len(inventory.ids),
                        "free": inventory.free_count(),
                        "problem": discovery.problem if discovery else "",
                    },
                }
            )
        )


class QuotaNoticesAPIHandler(APIHandler):
    """GET what the home page tells a user about their runtimes: warnings, stops, flags.

    A runtime's own token may read its user's notices (``read:users:activity``), so
    the notebook shows a warning where the user is working, not only on the home page.
    """

    @needs_scope("read:users:activity")
    async def get(self, user_name: str) -> None:
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"no such user: {user_name!r}")
        notices = await quota_notices(user)
        self.write(json.dumps({"notices": [n.to_json() for n in notices]}))


class OpenAPIHandler(APIHandler):
    """The OpenAPI document for what kernelhub adds to JupyterHub's REST API."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(files("kernelhub.hubapp").joinpath("openapi.json").read_text())

    def check_xsrf_cookie(self) -> None:
        return None


def kernelhub_api_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """Routes (relative to the hub prefix) that go in front of JupyterHub's own."""
    return [
        (r"/api/users/([^/]+)/server", RuntimeServerAPIHandler),
        (r"/api/users/([^/]+)/servers/([^/]*)", RuntimeServerAPIHandler),
        (r"/api/kernelhub/runtime-types", RuntimeTypesAPIHandler),
        (r"/api/kernelhub/notices/([^/]+)", QuotaNoticesAPIHandler),
        (r"/api/kernelhub/openapi.json", OpenAPIHandler),
    ]
