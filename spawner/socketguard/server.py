"""The guard as an HTTP service: decide (policy.py, bodies.py), then forward to the socket.

Each request is matched, its body checked, and the containers or images it names are
looked up through the socket before anything is forwarded, so the engine never sees
a refused request and a refusal leaves nothing half-created. What is forwarded is what
was checked: the normalised body, the parsed query, a container by its resolved ID.
Responses stream back (a wait is a long poll).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from tornado import httputil, iostream, web

from .bodies import check_container_create, check_volume_create
from .decode import Refused
from .policy import (
    BODY_KINDS,
    READ_ONLY_KINDS,
    GuardConfig,
    Matched,
    filter_list,
    is_runtime_container,
    is_runtime_image,
    match,
)
from .services import (
    check_service_create,
    filter_services,
    filter_tasks,
    info_subset,
    is_runtime_service,
)

log = logging.getLogger("kernelhub.socketguard")

# response headers docker-py reads; hop-by-hop ones (Connection, Upgrade) never pass
PASSED_HEADERS = ("Content-Type", "Api-Version", "Docker-Experimental", "Ostype", "Server")


# responses cut down to what the hub may see: runtimes only, and of /info what it reads
FILTERED: dict[str, Callable[[Any], Any]] = {
    "container-list": filter_list,
    "service-list": filter_services,
    "task-list": filter_tasks,
    "info": info_subset,
}


class Engine:
    """The Docker engine behind its unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://docker",
            # a wait lasts as long as the container runs; a connect must be quick
            timeout=httpx.Timeout(None, connect=10.0),
            # no cap on connections: long waits must not starve the spawner's calls
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )

    async def inspect(self, what: str, name: str, version: str) -> httpx.Response:
        return await self.client.get(f"{version}/{what}/{name}/json")

    async def close(self) -> None:
        await self.client.aclose()


@web.stream_request_body
class GuardHandler(web.RequestHandler):
    def initialize(self, config: GuardConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.body = bytearray()
        self.too_big = False
        self.upstream: httpx.Response | None = None
        self.closing: asyncio.Future[None] | None = None

    def prepare(self) -> None:
        length = self.request.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > self.config.max_body:
            self.refuse(Refused(f"the body exceeds {self.config.max_body} bytes", 413))

    def data_received(self, chunk: bytes) -> None:
        if len(self.body) + len(chunk) > self.config.max_body:
            self.too_big = True  # answered 413 once the body is in (chunked uploads)
        elif not self.too_big:
            self.body += chunk

    def refuse(self, refusal: Refused) -> None:
        # one line, no body: bodies hold tokens (a runtime's environment)
        log.warning(
            "refused %s %s: %s", self.request.method, self.request.path[:200], refusal.message
        )
        self.set_status(refusal.status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": refusal.status, "message": refusal.message}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        message = httputil.responses.get(status_code, "error")
        self.finish(json.dumps({"status": status_code, "message": message}))

    async def handle(self) -> None:
        try:
            if self.too_big:
                raise Refused(f"the body exceeds {self.config.max_body} bytes", 413)
            if "Upgrade" in self.request.headers:
                raise Refused("connection upgrades (attach, exec) are refused")
            route = match(self.request.method or "", self.request.path, self.request.query)
            await self.dispatch(route)
        except Refused as refusal:
            self.refuse(refusal)
        except httpx.HTTPError as e:
            log.error("the engine did not answer: %s", type(e).__name__)
            self.refuse(Refused("the Docker engine did not answer", 502))

    get = post = delete = head = put = handle

    async def dispatch(self, route: Matched) -> None:
        body: bytes | None = None
        if route.kind not in BODY_KINDS and self.body.strip():
            raise Refused("this call takes no body")
        if self.config.read_only and not self.readable(route):
            raise Refused("this address of the guard is read-only: runtimes' state only")
        target = None
        if route.kind == "container-create":
            create = check_container_create(
                self.config, bytes(self.body), route.query.get("name", "")
            )
            image = await self.engine.inspect("images", create.image, route.version)
            labels = image.json().get("Config", {}).get("Labels") if image.is_success else {}
            if not is_runtime_image(self.config, create.image, labels):
                raise Refused(f"image {create.image} is not a kernelhub runtime image")
            body = json.dumps(create.body).encode()
            log.info("creating a runtime container of %s for %s", create.image, create.user)
        elif route.kind == "service-create":
            body = await self.service_create(route)
        elif route.kind in ("service", "service-inspect"):
            found = await self.engine.client.get(f"{route.version}/services/{route.target}")
            if not found.is_success:  # no such service: the engine's own 404
                return self.relay(found.status_code, found.headers, found.content)
            model = found.json()
            if not is_runtime_service(model):
                raise Refused(f"service {route.target} is not a kernelhub runtime")
            if route.kind == "service-inspect" and not route.query:
                return self.relay(found.status_code, found.headers, found.content)
            target = str(model["ID"])  # the one checked, even if the name moves on
        elif route.kind == "volume-create":
            body = json.dumps(check_volume_create(self.config, bytes(self.body))).encode()
        elif route.kind == "image-inspect":
            found = await self.engine.inspect("images", route.target, route.version)
            if found.is_success:
                labels = found.json().get("Config", {}).get("Labels")
                if not is_runtime_image(self.config, route.target, labels):
                    raise Refused(f"image {route.target} is not a kernelhub runtime image")
            return self.relay(found.status_code, found.headers, found.content)
        elif route.kind == "network-inspect":
            if route.target not in (*self.config.networks, "bridge"):
                raise Refused(f"network {route.target} is not the runtimes' network")
        elif route.kind in ("container", "container-inspect"):
            found = await self.engine.inspect("containers", route.target, route.version)
            if not found.is_success:  # no such container: the engine's own 404
                return self.relay(found.status_code, found.headers, found.content)
            model = found.json()
            if not is_runtime_container((model.get("Config") or {}).get("Labels")):
                raise Refused(f"container {route.target} is not a kernelhub runtime")
            if route.kind == "container-inspect" and self.config.read_only:
                (model.get("Config") or {}).pop("Env", None)  # the runtime's own token
                return self.relay(found.status_code, found.headers, json.dumps(model).encode())
            if route.kind == "container-inspect":
                return self.relay(found.status_code, found.headers, found.content)
            target = str(model["Id"])  # the one checked, even if the name moves on
        await self.forward(route, body, target)

    async def service_create(self, route: Matched) -> bytes:
        create = check_service_create(self.config, bytes(self.body))
        # nodes pull the registry's image; the manager's engine holds the one pushed
        # there, by its local name or its registry tag
        for name in dict.fromkeys((create.local_image, create.image)):
            image = await self.engine.inspect("images", name, route.version)
            labels = image.json().get("Config", {}).get("Labels") if image.is_success else {}
            if is_runtime_image(self.config, name, labels):
                break
        else:
            raise Refused(f"image {create.image} is not a kernelhub runtime image")
        log.info("creating a runtime service of %s for %s", create.image, create.user)
        return json.dumps(create.body).encode()

    @staticmethod
    def readable(route: Matched) -> bool:
        return route.kind in READ_ONLY_KINDS or route.path in ("/_ping", "/version")

    async def forward(self, route: Matched, body: bytes | None, target: str | None) -> None:
        url = route.url(target)
        if route.query:
            url += "?" + urlencode(route.query)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = self.engine.client.build_request(
            self.request.method or "GET", url, content=body, headers=headers
        )
        self.upstream = await self.engine.client.send(request, stream=True)
        try:
            only = FILTERED.get(route.kind)
            if only is not None:
                await self.upstream.aread()
                listed = only(self.upstream.json()) if self.upstream.is_success else None
                content = self.upstream.content if listed is None else json.dumps(listed).encode()
                return self.relay(self.upstream.status_code, self.upstream.headers, content)
            self.relay_head(self.upstream.status_code, self.upstream.headers)
            if self.upstream.status_code not in (204, 304) and self.request.method != "HEAD":
                async for chunk in self.upstream.aiter_raw():
                    self.write(chunk)
                    await self.flush()
            self.finish()
        except iostream.StreamClosedError:
            pass  # the client went away (a cancelled wait)
        finally:
            await self.upstream.aclose()

    def relay_head(self, status: int, headers: httpx.Headers) -> None:
        self.set_status(status)
        for name in PASSED_HEADERS:
            if name in headers:
                self.set_header(name, headers[name])

    def relay(self, status: int, headers: httpx.Headers, content: bytes) -> None:
        self.relay_head(status, headers)
        if status not in (204, 304) and self.request.method != "HEAD":
            self.write(content)
        self.finish()

    def on_connection_close(self) -> None:
        # stop reading from the engine for a client that is gone
        if self.upstream is not None and not self.upstream.is_closed:
            self.closing = asyncio.ensure_future(self.upstream.aclose())


def make_app(config: GuardConfig, engine: Engine) -> web.Application:
    return web.Application(
        [(r".*", GuardHandler, {"config": config, "engine": engine})],
        log_function=_access_log,
    )


def _access_log(handler: web.RequestHandler) -> None:
    # refusals are logged by the handler itself; the rest only when debugging
    request = handler.request
    log.debug("%d %s %s", handler.get_status(), request.method, request.path[:200])
