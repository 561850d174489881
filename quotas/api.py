"""The quota REST API: a JupyterHub service users and admins reach through the hub's proxy.

Users read their own usage and remaining quota; admins (hub admins, or tokens with
``admin:users``) read anyone's and change rules, flags and usage. A flag's reason and
events' details (the detector's explanation) are for admins only: users read their
flag and events through ``disclosure.disclose``, with those fields null. Every error
is JSON ``{"status", "message"}``, like the hub's own API; bad input is a 4xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from jupyterhub.services.auth import HubAuth, HubAuthenticated
from tornado import web

from kernelhub.quotas.api_model import (
    MAX_NAME,
    ApiError,
    describe,
    no_unknown,
    parse_rule,
    parse_since,
    refuse_constant,
    rule_json,
    summary,
)
from kernelhub.quotas.clock import Clock, SystemClock
from kernelhub.quotas.disclosure import DEFAULT_CONTACT, disclose
from kernelhub.quotas.hub_api import HubLookupError
from kernelhub.quotas.policy import Scope, week_start
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.usage import USAGE_KEYS, usage_json

UserLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


@dataclass
class Context:
    """What every handler shares: the store, the hub seams, the clock, and whom flagged
    users are told to contact."""

    store: QuotaStore
    hub_auth: HubAuth
    lookup_user: UserLookup
    clock: Clock
    contact: str = DEFAULT_CONTACT

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)


class BaseHandler(HubAuthenticated, web.RequestHandler):
    ctx: Context
    requester: dict[str, Any]
    public = False

    def initialize(self, ctx: Context) -> None:
        self.ctx = ctx
        self.hub_auth = ctx.hub_auth

    @property
    def hub_scopes(self) -> set[str] | None:  # type: ignore[override]
        # every hub user may call the API (to read their own quota); who may do what is
        # decided per endpoint, so no access:services scope is demanded up front
        return None

    async def prepare(self) -> None:
        self.set_header("Content-Type", "application/json")
        if self.public:
            return
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as e:
            raise ApiError(502, "cannot check the API token with the hub; try again") from e
        model = self.check_hub_user(model) if model else None
        if not model:
            raise ApiError(401, "send a valid hub API token: Authorization: token <token>")
        self._hub_auth_user_cache = model
        self.requester = model

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif isinstance(exc, web.HTTPError) and status_code < 500:
            message = exc.log_message % exc.args if exc.log_message else self._reason
        else:
            message = "internal error in the quota service; see its log"  # never a traceback
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))

    # -- who may do what -----------------------------------------------------
    @property
    def is_admin(self) -> bool:
        # the token's scopes, not the user's `admin` flag: a narrowly scoped token of an
        # admin user must not administer quotas (an admin's full token has admin:users)
        return "admin:users" in (self.requester.get("scopes") or [])

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(403, "only administrators may do this")

    async def target_user(self, name: str) -> dict[str, Any]:
        """The hub model of ``name``, if the requester may see it (themselves, or admins)."""
        own = self.requester.get("kind", "user") == "user" and self.requester["name"] == name
        if not own and not self.is_admin:
            raise ApiError(403, f"you may read only your own quota, not {name!r}'s")
        try:
            model = await self.ctx.lookup_user(name) if len(name) <= MAX_NAME else None
        except HubLookupError as e:
            raise ApiError(502, f"cannot look up user {name!r} at the hub: {e}") from None
        if model is None:
            raise ApiError(404, f"no such user: {name!r}")
        return model

    def json_body(self, required: bool = True) -> dict[str, Any]:
        if not self.request.body.strip():
            if required:
                raise ApiError(400, "send a JSON object as the request body")
            return {}
        try:
            body = json.loads(self.request.body, parse_constant=refuse_constant)
        except (ValueError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # the store is synchronous: keep its I/O off the event loop
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class UserHandler(BaseHandler):
    async def get(self, name: str | None = None) -> None:
        if name is None:
            name = str(self.requester["name"])
            if self.requester.get("kind", "user") != "user":
                raise ApiError(400, "a service has no quota of its own; ask for a user's")
        model = await self.target_user(name)
        groups, now = model.get("groups") or [], self.ctx.now()
        found = await self.run(
            summary, self.ctx.store, name, groups, now, self.is_admin, self.ctx.contact
        )
        self.write_json(found)


class UsageHandler(BaseHandler):
    async def get(self, name: str) -> None:
        await self.target_user(name)
        since = parse_since(self.get_query_argument("since", "7d"), self.ctx.now()).date()
        rows = await self.run(self.ctx.store.usage, name, since)
        days = [usage_json(row) for row in rows]
        totals = {k: round(sum(d[k] for d in days), 4) for k in USAGE_KEYS}
        self.write_json({"user": name, "since": since.isoformat(), "days": days, "totals": totals})


class RuleHandler(BaseHandler):
    async def _scope(self, kind: str | None, subject: str | None) -> tuple[Scope, str]:
        self.require_admin()
        if kind is None:
            return "default", ""
        assert subject is not None
        if kind == "users":
            await self.target_user(subject)
            return "user", subject
        if not subject or len(subject) > MAX_NAME:
            raise ApiError(400, f"a group name has 1 to {MAX_NAME} characters")
        return "group", subject

    async def get(self, kind: str | None = None, subject: str | None = None) -> None:
        scope, subject = await self._scope(kind, subject)
        rules = await self.run(self.ctx.store.rules)
        rule = next((r for r in rules if (r.scope, r.subject) == (scope, subject)), None)
        if rule is None:
            raise ApiError(404, f"no rule for {describe(scope, subject)}")
        self.write_json(rule_json(rule))

    async def put(self, kind: str | None = None, subject: str | None = None) -> None:
        scope, subject = await self._scope(kind, subject)
        rule = parse_rule(self.json_body(), scope, subject)
        await self.run(self.ctx.store.set_rule, rule)
        self.write_json(rule_json(rule))

    async def delete(self, kind: str | None = None, subject: str | None = None) -> None:
        scope, subject = await self._scope(kind, subject)
        if not await self.run(self.ctx.store.delete_rule, scope, subject):
            raise ApiError(404, f"no rule for {describe(scope, subject)}")
        self.set_status(204)
        self.finish()


class RulesHandler(BaseHandler):
    async def get(self) -> None:
        self.require_admin()
        rules = await self.run(self.ctx.store.rules)
        self.write_json({"rules": [rule_json(r) for r in rules]})


class ResetHandler(BaseHandler):
    async def post(self, name: str) -> None:
        self.require_admin()
        await self.target_user(name)
        body = self.json_body(required=False)
        no_unknown(body, {"window"})
        window = body.get("window", "week")
        if window not in ("day", "week"):
            raise ApiError(400, f'window must be "day" or "week", not {window!r}')
        now = self.ctx.now()
        first = now.date() if window == "day" else week_start(now)
        seconds = await self.run(self.ctx.store.reset_usage, name, first)
        forgotten = {"forgotten_gpu_hours": round(seconds / 3600, 4)}
        self.write_json({"user": name, "window": window, "since": first.isoformat(), **forgotten})


class EventsHandler(BaseHandler):
    async def get(self) -> None:
        user = self.get_query_argument("user", None)
        if not self.is_admin:
            own = str(self.requester["name"])
            if user not in (None, own):
                raise ApiError(403, f"you may read only your own events, not {user!r}'s")
            user = own
        elif user is not None:
            await self.target_user(user)
        since_text = self.get_query_argument("since", None)
        since = parse_since(since_text, self.ctx.now()) if since_text else None
        events = await self.run(self.ctx.store.events, user, since)
        self.write_json({"events": [disclose(e, admin=self.is_admin) for e in events]})


class FlagHandler(BaseHandler):
    async def put(self, name: str) -> None:
        self.require_admin()
        await self.target_user(name)
        body = self.json_body()
        no_unknown(body, {"reason", "block_gpu"})
        reason, block_gpu = body.get("reason"), body.get("block_gpu", False)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
            raise ApiError(400, "reason must be a non-empty string of at most 1000 characters")
        if not isinstance(block_gpu, bool):
            raise ApiError(400, "block_gpu must be true or false")
        flag = await self.run(self.ctx.store.flag, name, reason, block_gpu, self.ctx.now())
        self.write_json(disclose(flag, admin=True, contact=self.ctx.contact))

    async def delete(self, name: str) -> None:
        self.require_admin()
        await self.target_user(name)
        if not await self.run(self.ctx.store.unflag, name):
            raise ApiError(404, f"{name!r} is not flagged")
        self.set_status(204)
        self.finish()


class OpenAPIHandler(BaseHandler):
    public = True

    def get(self) -> None:
        self.finish(files("kernelhub.quotas").joinpath("openapi.json").read_text())


class NotFoundHandler(BaseHandler):
    public = True

    async def prepare(self) -> None:
        raise ApiError(404, f"no such endpoint: {self.request.method} {self.request.path}")


def make_app(
    store: QuotaStore,
    hub_auth: HubAuth,
    prefix: str,
    clock: Clock | None = None,
    lookup_user: UserLookup | None = None,
    contact: str = DEFAULT_CONTACT,
) -> web.Application:
    """The service's tornado app; routes under ``{prefix}api/``.

    ``lookup_user`` returns a user's hub model or ``None`` (``hub_api.HubUsers.get``);
    by default it asks the hub with the service's own token. ``contact``: whom a
    flagged user is told to contact.
    """
    if lookup_user is None:
        from kernelhub.quotas.hub_api import HubUsers

        lookup_user = HubUsers(hub_auth.api_url, hub_auth.api_token).get
    ctx = Context(store, hub_auth, lookup_user, clock or SystemClock(), contact)
    api = f"{prefix.rstrip('/')}/api"
    name = r"([^/]+)"
    routes: list[tuple[str, type[BaseHandler]]] = [
        (rf"{api}/user", UserHandler),
        (rf"{api}/users/{name}", UserHandler),
        (rf"{api}/users/{name}/usage", UsageHandler),
        (rf"{api}/users/{name}/reset", ResetHandler),
        (rf"{api}/users/{name}/flag", FlagHandler),
        (rf"{api}/rules", RulesHandler),
        (rf"{api}/rules/default", RuleHandler),
        (rf"{api}/rules/(users|groups)/{name}", RuleHandler),
        (rf"{api}/events", EventsHandler),
        (rf"{api}/openapi.json", OpenAPIHandler),
    ]
    return web.Application(
        [(path, handler, {"ctx": ctx}) for path, handler in routes],
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
    )
