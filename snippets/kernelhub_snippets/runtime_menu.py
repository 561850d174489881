"""The notebook's Runtime menu, server side: this runtime asks the hub for its user.

    GET  kernelhub/runtime          {"hub", "user", "server", "current", "runtimes",
                                     "types", "default_type", "quota", "note"}
    POST kernelhub/runtime/switch   {"runtime_type": "cpu-large"}
                                    -> the hub's answer: 202 {"switch_url", ...} or a refusal
    POST kernelhub/runtime/stop     {"server": ""} -> 202/204 once the hub stops it

The browser holds no hub credentials here (the hub's cookie is for /hub/ only, and
the hub's API wants its XSRF token), so the runtime asks with its own token
(``JUPYTERHUB_API_TOKEN``): kernelhub gives it its user's own servers
(``servers!user``) and nothing of anyone else's; the hub's scope checks, not this
code, keep one user from another. Requests are authenticated and authorized like
the server's own API (the user, with the server's XSRF protection), and their
bodies are read strictly: JSON objects of the named fields, with bounded strings.
The hub's refusals ({"status", "message"}) are passed on as they are.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from kernelhub_snippets.errors import error_json

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

AUTH_RESOURCE = "kernelhub-snippets"  # this extension's data (read) and actions (write)
HUB_TIMEOUT_SECONDS = 15.0
MAX_BODY = 4096
MAX_NAME = 255  # JupyterHub's limit on server names
OWN_STOP_DELAY_SECONDS = 0.2


class HubUnreachable(Exception):
    """The hub did not answer (down, restarting): the menu says so."""


class HubSession:
    """This runtime's user and server, and calls to the hub's API with its token."""

    def __init__(self, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
        self.api_url = environ.get("JUPYTERHUB_API_URL", "")
        self._token = environ.get("JUPYTERHUB_API_TOKEN", "")  # header only, never logged
        self.user = environ.get("JUPYTERHUB_USER", "")
        self.server = environ.get("JUPYTERHUB_SERVER_NAME", "")

    @property
    def present(self) -> bool:
        return bool(self.api_url and self._token and self.user)

    def user_path(self, *parts: str) -> str:
        return "/".join(["users", quote(self.user, safe=""), *parts])

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON or None); HubUnreachable when no answer came."""
        try:
            response = await AsyncHTTPClient().fetch(
                url_path_join(self.api_url, path),
                method=method,
                body=None if body is None else json.dumps(body),
                headers={
                    "Authorization": f"token {self._token}",
                    "Content-Type": "application/json",
                },
                request_timeout=HUB_TIMEOUT_SECONDS,
                follow_redirects=False,  # the token goes to the hub's API only
                allow_nonstandard_methods=True,
                raise_error=False,
            )
        except (OSError, HTTPClientError) as e:
            raise HubUnreachable(type(e).__name__) from None
        if response.code == 599:  # tornado's "no response" (timeout, refused)
            raise HubUnreachable("no answer")
        try:
            parsed = json.loads(response.body) if response.body else None
        except ValueError:
            parsed = None
        return response.code, parsed


def hub_message(status: int, body: Any, doing: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    return f"the hub could not {doing} (HTTP {status})"


class RuntimeMenuHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def hub(self) -> HubSession:
        session: HubSession = self.settings["kernelhub_hub_session"]
        return session

    def fail(self, status: int, message: str) -> web.HTTPError:
        return web.HTTPError(status, "%s", message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        unexpected = "internal error; see the server's log"  # never a traceback
        self.finish(error_json(status_code, kwargs.get("exc_info"), unexpected))

    def body_fields(self, fields: dict[str, type]) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            raise self.fail(413, f"the request body is limited to {MAX_BODY} bytes")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise self.fail(400, "the request body must be JSON") from None
        if not isinstance(body, dict):
            raise self.fail(400, "the request body must be a JSON object")
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise self.fail(400, f"unknown field(s): {', '.join(unknown)}")
        for name, kind in fields.items():
            value = body.get(name)
            if not isinstance(value, kind) or (isinstance(value, str) and len(value) > MAX_NAME):
                raise self.fail(400, f'"{name}" must be a {kind.__name__} (at most {MAX_NAME})')
        return body

    def need_hub(self) -> HubSession:
        if not self.hub.present:
            raise self.fail(404, "this server does not run under a kernelhub hub")
        return self.hub

    async def ask(self, method: str, path: str, doing: str, body: Any = None) -> tuple[int, Any]:
        try:
            return await self.need_hub().call(method, path, body)
        except HubUnreachable as e:
            self.log.warning("kernelhub runtime menu: the hub did not answer (%s)", e)
            raise self.fail(502, f"the hub did not answer; could not {doing}") from None

    def pass_on(self, status: int, body: Any, doing: str) -> None:
        if 300 <= status < 400:  # never followed (the token stays with the hub's API)
            raise self.fail(502, f"the hub answered with a redirect; could not {doing}")
        if status >= 400:
            raise self.fail(status, hub_message(status, body, doing))
        self.set_status(status)
        if status == 204:  # no body may follow
            self.finish()
            return
        self.finish(json.dumps(body if isinstance(body, dict) else {"status": status}))


class RuntimeInfoHandler(RuntimeMenuHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if not self.hub.present:
            self.finish(json.dumps({"hub": False}))
            return
        hub = self.hub
        (runtimes_status, runtimes), (types_status, types) = await asyncio.gather(
            self.ask("GET", f"kernelhub/{hub.user_path('runtimes')}", "list your runtimes"),
            self.ask("GET", "kernelhub/runtime-types", "list the runtime types"),
        )
        if runtimes_status != 200 or not isinstance(runtimes, dict):
            raise self.fail(502, hub_message(runtimes_status, runtimes, "list your runtimes"))
        if types_status != 200 or not isinstance(types, dict):
            raise self.fail(502, hub_message(types_status, types, "list the runtime types"))
        rows = [r for r in runtimes.get("runtimes", []) if isinstance(r, dict)]
        current = next((r for r in rows if r.get("name") == hub.server), None)
        self.finish(
            json.dumps(
                {
                    "hub": True,
                    "user": hub.user,
                    "server": hub.server,
                    "current": current,
                    "runtimes": rows,
                    "types": types.get("runtime_types", []),
                    "default_type": types.get("default", ""),
                    "quota": runtimes.get("quota"),
                    "note": runtimes.get("note", ""),
                }
            )
        )


class RuntimeSwitchHandler(RuntimeMenuHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body_fields({"runtime_type": str})
        hub = self.need_hub()
        path = hub.user_path("servers", quote(hub.server, safe=""), "switch")
        status, answer = await self.ask(
            "POST", f"kernelhub/{path}", "change the runtime type", body
        )
        self.pass_on(status, answer, "change the runtime type")


class RuntimeStopHandler(RuntimeMenuHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        server = self.body_fields({"server": str})["server"]
        if server in (".", ".."):  # no server's name, and a path segment to anything between
            raise self.fail(400, f"no runtime is named {server!r}")
        hub = self.need_hub()
        path = (
            hub.user_path("servers", quote(server, safe="")) if server else hub.user_path("server")
        )
        if server != hub.server:
            status, answer = await self.ask("DELETE", path, "stop the runtime")
            self.pass_on(status, answer, "stop the runtime")
            return
        # this very runtime: the hub answers only once it is gone, and its answer with
        # it, so the browser hears first, and then the hub is asked
        self.set_status(202)
        await self.finish(json.dumps({"status": 202, "message": "this runtime is stopping"}))
        await asyncio.sleep(OWN_STOP_DELAY_SECONDS)  # for the proxy to pass the answer on
        try:
            status, answer = await hub.call("DELETE", path)
        except HubUnreachable as e:
            self.log.warning("kernelhub runtime menu: the hub did not answer (%s)", e)
            return
        if status >= 400:
            self.log.warning("kernelhub runtime menu: %s", hub_message(status, answer, "stop"))


def load_runtime_menu(serverapp: ServerApp) -> None:
    web_app = serverapp.web_app
    web_app.settings["kernelhub_hub_session"] = HubSession()
    base = url_path_join(web_app.settings["base_url"], "kernelhub", "runtime")
    web_app.add_handlers(
        ".*$",
        [
            (base, RuntimeInfoHandler),
            (url_path_join(base, "switch"), RuntimeSwitchHandler),
            (url_path_join(base, "stop"), RuntimeStopHandler),
        ],
    )
