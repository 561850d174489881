"""REST endpoints kernelhub adds to (or puts in front of) JupyterHub's API.

Errors are JupyterHub's API errors: JSON ``{"status": ..., "message": ...}``.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.roles import assign_default_roles
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import maybe_future
from tornado import web

from kernelhub.executor import run_blocking
from kernelhub.hubapp.errors import http_refusal, json_object
from kernelhub.hubapp.kernel_reports import kernel_report_handlers
from kernelhub.hubapp.warm import discard_warm_runtime, settle_warm_runtime
from kernelhub.launcher.credentials import new_password
from kernelhub.launcher.up import OPERATOR_SERVICE
from kernelhub.quotagate.gate import check_quota
from kernelhub.quotagate.notices import quota_notices
from kernelhub.runtimes.catalog import RuntimeCatalog, user_group_names
from kernelhub.runtimes.types import RuntimeRequestError
from kernelhub.signin.passwords import AccountError, hash_password

if TYPE_CHECKING:
    from kernelhub.signin.local import LocalPasswordAuthenticator


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
        await settle_warm_runtime(user, server_name)
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
                await discard_warm_runtime(user, server_name, "its start was refused")
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


class LocalAccountsAPIHandler(APIHandler):
    """Local sign-in accounts made by an operator (`kernelhub user add NAME`).

    POST ``{"name": "alice", "admin": false}`` creates the hub user (unless it exists)
    and its approved password entry, and answers 201 ``{"name", "admin", "password"}``:
    the generated password, which the hub keeps only hashed, travels once, in this
    answer. A name that already has a password is refused (409); nothing is left
    half-created when anything fails.
    """

    FIELDS = frozenset({"name", "admin"})

    @needs_scope("admin:users")
    async def post(self) -> None:
        authenticator = local_authenticator(self)
        body = json_object(self, self.FIELDS)
        name, admin = body.get("name"), body.get("admin", False)
        if not isinstance(name, str):
            raise http_refusal('"name" must be a string (the new user\'s name)')
        if not isinstance(admin, bool):
            raise http_refusal('"admin" must be true or false')
        if admin and not self._may_grant_admin():
            raise http_refusal("only administrators may create administrators", 403)
        try:
            name = authenticator.new_account_name(name)
            _check_may_sign_in(authenticator, name)
        except AccountError as e:
            raise http_refusal(e.message, e.status) from None
        password = new_password()
        password_hash = await run_blocking(hash_password, password)
        user = self.find_user(name)
        created = user is None
        if user is None:
            user = self.user_from_username(name)
        try:
            if admin and not user.admin:
                user.admin = True
                assign_default_roles(self.db, entity=user)
            authenticator.create_account(name, password_hash)  # commits the admin flag too
            if created:
                await maybe_future(authenticator.add_user(user))
        except Exception as e:
            self.db.rollback()
            if created:
                self.users.delete(user)
            if isinstance(e, AccountError):  # a sign-up took the name meanwhile
                raise http_refusal(e.message, e.status) from None
            raise
        self.log.info("Local sign-in: %s created account %s", self.current_user.name, name)
        self.set_status(201)
        self.set_header("Cache-Control", "no-store")  # the answer holds a password
        self.write(json.dumps({"name": name, "admin": bool(user.admin), "password": password}))

    def _may_grant_admin(self) -> bool:
        # as JupyterHub's own POST /users: admin:users alone does not make admins,
        # except for the operator service `kernelhub up` registers for its CLI
        requester = self.current_user
        if isinstance(requester, orm.Service):
            return bool(requester.name == OPERATOR_SERVICE or requester.admin)
        return bool(getattr(requester, "admin", False))


class LocalAccountPasswordAPIHandler(APIHandler):
    """POST: a new generated password for a local account, which is approved with it
    (`kernelhub user reset-password NAME`); answers ``{"name", "password"}``. The old
    password stops working at once."""

    @needs_scope("admin:users")
    async def post(self, user_name: str) -> None:
        authenticator = local_authenticator(self)
        json_object(self, frozenset())
        password = new_password()
        try:
            name = authenticator.account_name(user_name)
            password_hash = await run_blocking(hash_password, password)
            authenticator.reset_account_password(name, password_hash)
        except AccountError as e:
            raise http_refusal(e.message, e.status) from None
        self.log.info("Local sign-in: %s reset the password of %s", self.current_user.name, name)
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({"name": name, "password": password}))


def local_authenticator(handler: APIHandler) -> LocalPasswordAuthenticator:
    # imported when used: nativeauthenticator adds its table to the hub's ORM
    from kernelhub.signin.local import LocalPasswordAuthenticator

    authenticator = handler.authenticator
    if not isinstance(authenticator, LocalPasswordAuthenticator):
        raise http_refusal(
            "this hub does not sign in with local passwords (its authenticator is "
            f"{type(authenticator).__name__})",
            409,
        )
    return authenticator


def _check_may_sign_in(authenticator: LocalPasswordAuthenticator, name: str) -> None:
    """Refuse an account that could never sign in (a --single-user hub's other names)."""
    if authenticator.allow_all or authenticator.allow_existing_users:
        return
    if name not in authenticator.allowed_users:
        admitted = ", ".join(sorted(authenticator.allowed_users)) or "nobody"
        raise AccountError(f"{name} may not sign in on this hub (only {admitted} may)", 409)


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
        (r"/api/kernelhub/local-users", LocalAccountsAPIHandler),
        (r"/api/kernelhub/local-users/([^/]+)/password", LocalAccountPasswordAPIHandler),
        (r"/api/kernelhub/openapi.json", OpenAPIHandler),
        *kernel_report_handlers(),
    ]
