"""The Runtime menu's server side (kernelhub-snippets, ``runtime_menu.py``), under a real
Jupyter Server, talking to a stand-in hub over real HTTP on loopback:

    GET  {base}kernelhub/runtime         the hub's runtimes and runtime types, merged
    POST {base}kernelhub/runtime/switch  -> POST /hub/api/kernelhub/users/{u}/servers/{s}/switch
    POST {base}kernelhub/runtime/stop    -> DELETE /hub/api/users/{u}/server[s/{name}]

The runtime asks with its own token (``JUPYTERHUB_API_TOKEN``), read when the
extension loads. The stand-in hub is a tornado application on the test's event loop
that records each request as it arrived (raw path, percent-encoding intact) and
answers what the test tells it to; the security rules are checked on what it saw.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from kernelhub_snippets.runtime_menu import load_runtime_menu

# imported into this module, not registered as a plugin (see tests/test_snippets.py)
from pytest_jupyter.jupyter_server import *  # noqa: F403
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

TOKEN = secrets.token_hex(16)  # the runtime's hub token: must only reach the hub's API
HUB_ENV = ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER",
           "JUPYTERHUB_SERVER_NAME")  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str  # as sent: percent-encoding intact
    authorization: str
    body: Any


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a table."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.replies: dict[tuple[str, str], Reply] = {}
        self.port = 0
        self.server: HTTPServer | None = None

    def answer(self, method: str, path: str, status: int, body: Any = None, **headers: str) -> None:
        self.replies[(method, path)] = Reply(status, body, headers)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api/"

    async def start(self) -> None:
        hub = self

        class Record(web.RequestHandler):
            SUPPORTED_METHODS = ("GET", "POST", "DELETE", "PATCH", "PUT")

            def check_xsrf_cookie(self) -> None:  # an API, as the hub's is for tokens
                pass

            def handle(self) -> None:
                raw = self.request.body
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                method, path = self.request.method or "", self.request.path  # not decoded
                auth = self.request.headers.get("Authorization", "")
                hub.seen.append(Seen(method, path, auth, body))
                reply = hub.replies.get((method, path))
                reply = reply or Reply(404, {"status": 404, "message": "not in the test's table"})
                self.set_status(reply.status)
                for name, value in reply.headers.items():
                    self.set_header(name, value)
                if reply.body is not None:
                    self.set_header("Content-Type", "application/json")
                    self.finish(json.dumps(reply.body))
                else:
                    self.finish()

            get = post = delete = patch = put = handle

        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.server = HTTPServer(web.Application([(r".*", Record)]))
        self.server.add_sockets(sockets)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hubs(jp_asyncio_loop: Any) -> Iterator[Callable[[], FakeHub]]:
    started: list[FakeHub] = []

    def start() -> FakeHub:
        hub = FakeHub()
        jp_asyncio_loop.run_until_complete(hub.start())
        started.append(hub)
        return hub

    yield start
    for hub in started:
        jp_asyncio_loop.run_until_complete(hub.stop())


@pytest.fixture
def hub(hubs: Callable[[], FakeHub]) -> FakeHub:
    return hubs()


Api = Callable[..., tuple[int, Any, Any]]


@pytest.fixture
def runtime(
    jp_serverapp: Any, jp_fetch: Any, jp_asyncio_loop: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Api]:
    """Loads the Runtime menu as the extension does, with ``env`` as this runtime's
    environment, and returns a client: (status, decoded JSON or raw body, response)."""

    def load(env: dict[str, str]) -> Api:
        for name in HUB_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        load_runtime_menu(jp_serverapp)

        def call(method: str, path: str = "", body: Any = None, **kwargs: Any) -> Any:
            if body is not None:
                kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body)
            elif method == "POST":
                kwargs["body"] = b""
            parts = ["kernelhub", "runtime", *([path] if path else [])]
            future = jp_fetch(*parts, method=method, raise_error=False, **kwargs)
            response = jp_asyncio_loop.run_until_complete(future)
            try:
                decoded = json.loads(response.body) if response.body else None
            except ValueError:
                decoded = response.body
            return response.code, decoded, response

        return call

    return load


def in_hub(hub: FakeHub, user: str = "alice", server: str = "gpu") -> dict[str, str]:
    return {"JUPYTERHUB_API_URL": hub.api_url, "JUPYTERHUB_API_TOKEN": TOKEN,
            "JUPYTERHUB_USER": user, "JUPYTERHUB_SERVER_NAME": server}  # fmt: skip


def is_error(status: int, body: Any, expected_status: int) -> bool:
    return (status == expected_status and isinstance(body, dict)
            and body.get("status") == expected_status
            and isinstance(body.get("message"), str) and bool(body["message"]))  # fmt: skip


# --- outside a hub ---

OUTSIDE = [
    ("no hub environment at all", {}),
    ("an API URL but no token", {"JUPYTERHUB_API_URL": "HUB", "JUPYTERHUB_USER": "alice"}),
    ("a URL and a token but no user", {"JUPYTERHUB_API_URL": "HUB",
                                       "JUPYTERHUB_API_TOKEN": TOKEN}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "env"), OUTSIDE, ids=[c for c, _ in OUTSIDE])
def test_outside_a_hub_the_menu_says_so_and_asks_no_one(
    runtime: Callable[..., Api], hub: FakeHub, case: str, env: dict[str, str]
) -> None:
    api = runtime({k: hub.api_url if v == "HUB" else v for k, v in env.items()})
    status, body, response = api("GET")
    assert (status, body) == (200, {"hub": False})
    assert response.headers["Cache-Control"] == "no-store"
    for path, request in [("switch", {"runtime_type": "cpu-large"}), ("stop", {"server": ""})]:
        status, body, _ = api("POST", path, request)
        assert is_error(status, body, 404), (path, status, body)
    assert hub.seen == []


# --- GET: the hub's runtimes and types, merged ---

RUNTIMES: dict[str, Any] = {
    "runtimes": [
        {"name": "", "runtime_type": "cpu", "status": "running", "time_left": 3600},
        {"name": "gpu", "runtime_type": "gpu-t4", "status": "running", "time_left": 60},
    ],
    "note": "GPU runtimes stop after 12 hours",
    "quota": {"gpu_hours_week_used": 2.5, "gpu_hours_week_limit": 10},
}
TYPES: dict[str, Any] = {"default": "cpu", "runtime_types": [{"name": "cpu"}, {"name": "gpu-t4"}]}


def test_get_merges_the_hubs_runtimes_and_types_with_the_runtimes_token(
    runtime: Callable[..., Api], hub: FakeHub
) -> None:
    hub.answer("GET", "/hub/api/kernelhub/users/alice/runtimes", 200, RUNTIMES)
    hub.answer("GET", "/hub/api/kernelhub/runtime-types", 200, TYPES)
    status, body, response = runtime(in_hub(hub))("GET")
    assert status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert body == {
        "hub": True,
        "user": "alice",
        "server": "gpu",
        "current": RUNTIMES["runtimes"][1],
        "runtimes": RUNTIMES["runtimes"],
        "types": TYPES["runtime_types"],
        "default_type": "cpu",
        "quota": RUNTIMES["quota"],
        "note": RUNTIMES["note"],
    }
    assert sorted((s.method, s.path, s.authorization) for s in hub.seen) == [
        ("GET", "/hub/api/kernelhub/runtime-types", f"token {TOKEN}"),
        ("GET", "/hub/api/kernelhub/users/alice/runtimes", f"token {TOKEN}"),
    ]


@pytest.mark.parametrize(
    ("server", "current"), [("", 0), ("gpu", 1), ("gone", None)], ids=["default", "named", "none"]
)
def test_current_is_the_row_of_this_server(
    runtime: Callable[..., Api], hub: FakeHub, server: str, current: int | None
) -> None:
    hub.answer("GET", "/hub/api/kernelhub/users/alice/runtimes", 200, RUNTIMES)
    hub.answer("GET", "/hub/api/kernelhub/runtime-types", 200, TYPES)
    status, body, _ = runtime(in_hub(hub, server=server))("GET")
    assert status == 200
    assert body["current"] == (None if current is None else RUNTIMES["runtimes"][current])


HUB_ERRORS = [
    # (case, runtimes reply, types reply, message in the 502)
    ("runtimes refused", Reply(403, {"message": "x"}), Reply(200, TYPES), "x"),
    ("types refused", Reply(200, RUNTIMES), Reply(403, {"message": "y"}), "y"),
    ("runtimes without a message", Reply(500), Reply(200, TYPES),
     "the hub could not list your runtimes (HTTP 500)"),
    ("types not JSON object", Reply(200, RUNTIMES), Reply(200, ["cpu"]),
     "the hub could not list the runtime types (HTTP 200)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "runtimes", "types", "message"), HUB_ERRORS, ids=[e[0] for e in HUB_ERRORS]
)
def test_get_passes_a_hub_error_on_as_502_with_its_message(
    runtime: Callable[..., Api], hub: FakeHub, case: str, runtimes: Reply, types: Reply,
    message: str,
) -> None:  # fmt: skip
    hub.replies[("GET", "/hub/api/kernelhub/users/alice/runtimes")] = runtimes
    hub.replies[("GET", "/hub/api/kernelhub/runtime-types")] = types
    status, body, _ = runtime(in_hub(hub))("GET")
    assert (status, body) == (502, {"status": 502, "message": message})


# --- POST switch ---

SWITCH = "/hub/api/kernelhub/users/alice/servers/gpu/switch"


def test_switch_asks_the_hub_with_exactly_the_body_and_passes_its_answer_back(
    runtime: Callable[..., Api], hub: FakeHub
) -> None:
    answer = {"switch_url": "/hub/kernelhub/switch/alice/gpu", "runtime_type": "cpu-large"}
    hub.answer("POST", SWITCH, 202, answer)
    status, body, _ = runtime(in_hub(hub))("POST", "switch", {"runtime_type": "cpu-large"})
    assert (status, body) == (202, answer)
    assert hub.seen == [Seen("POST", SWITCH, f"token {TOKEN}", {"runtime_type": "cpu-large"})]


def test_switch_of_the_default_server_names_it_empty(
    runtime: Callable[..., Api], hub: FakeHub
) -> None:
    path = "/hub/api/kernelhub/users/alice/servers//switch"  # the hub's route: ([^/]*)
    hub.answer("POST", path, 202, {"switch_url": "x"})
    status, _, _ = runtime(in_hub(hub, server=""))("POST", "switch", {"runtime_type": "cpu"})
    assert status == 202
    assert [(s.method, s.path) for s in hub.seen] == [("POST", path)]


@pytest.mark.parametrize(
    ("hub_status", "hub_body", "message"),
    [
        (403, {"status": 403, "message": "runtime limit reached: 1 of 1 GPU runtimes"},
         "runtime limit reached: 1 of 1 GPU runtimes"),
        (409, {"status": 409, "message": "no free GPU"}, "no free GPU"),
        (400, None, "the hub could not change the runtime type (HTTP 400)"),
    ],
    ids=["quota", "no-gpu", "no-message"],
)  # fmt: skip
def test_switch_refusals_keep_the_hubs_status_and_message(
    runtime: Callable[..., Api], hub: FakeHub, hub_status: int, hub_body: Any, message: str
) -> None:
    hub.answer("POST", SWITCH, hub_status, hub_body)
    status, body, _ = runtime(in_hub(hub))("POST", "switch", {"runtime_type": "gpu-t4"})
    assert (status, body) == (hub_status, {"status": hub_status, "message": message})


# --- POST stop ---

STOPS = [
    # (this runtime's server, the body's server, the hub's path, the hub's status)
    ("gpu", "", "/hub/api/users/alice/server", 204),
    ("gpu", "", "/hub/api/users/alice/server", 202),
    ("", "gpu", "/hub/api/users/alice/servers/gpu", 204),
    ("", "gpu", "/hub/api/users/alice/servers/gpu", 202),
]


@pytest.mark.parametrize(("own", "server", "path", "hub_status"), STOPS)
def test_stopping_another_runtime_deletes_it_and_passes_the_status_back(
    runtime: Callable[..., Api], hub: FakeHub, own: str, server: str, path: str,
    hub_status: int,
) -> None:  # fmt: skip
    hub.answer("DELETE", path, hub_status)
    status, body, response = runtime(in_hub(hub, server=own))("POST", "stop", {"server": server})
    assert status == hub_status
    if hub_status == 204:
        assert response.body == b""
    else:
        assert body == {"status": 202}
    assert hub.seen == [Seen("DELETE", path, f"token {TOKEN}", None)]


def test_a_stop_refusal_keeps_the_hubs_status_and_message(
    runtime: Callable[..., Api], hub: FakeHub
) -> None:
    hub.answer("DELETE", "/hub/api/users/alice/servers/x", 403, {"message": "not yours"})
    status, body, _ = runtime(in_hub(hub))("POST", "stop", {"server": "x"})
    assert (status, body) == (403, {"status": 403, "message": "not yours"})


def wait_until(loop: Any, done: Callable[[], bool], seconds: float = 5.0) -> None:
    """Runs the event loop (the server's and the stand-in hub's) until ``done()``."""

    async def poll() -> None:
        for _ in range(int(seconds / 0.05)):
            if done():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("timed out")

    loop.run_until_complete(poll())


@pytest.mark.parametrize(
    ("own", "path"),
    [("gpu", "/hub/api/users/alice/servers/gpu"), ("", "/hub/api/users/alice/server")],
    ids=["named", "default"],
)
def test_stopping_this_runtime_answers_first_then_asks_the_hub(
    runtime: Callable[..., Api], hub: FakeHub, jp_asyncio_loop: Any, own: str, path: str
) -> None:
    # the hub answers a runtime's own stop only once it is gone: the browser hears first
    hub.answer("DELETE", path, 204)
    status, body, _ = runtime(in_hub(hub, server=own))("POST", "stop", {"server": own})
    assert (status, body) == (202, {"status": 202, "message": "this runtime is stopping"})
    assert hub.seen == []
    wait_until(jp_asyncio_loop, lambda: bool(hub.seen))
    assert hub.seen == [Seen("DELETE", path, f"token {TOKEN}", None)]


# --- hostile names: quoted whole, one path segment, the user from the environment ---

HOSTILE_SERVERS = [
    ("../../bob/server", "..%2F..%2Fbob%2Fserver"),
    ("a?b#c", "a%3Fb%23c"),
    ("%2e%2e", "%252e%252e"),
    ("..%2F..%2Fbob", "..%252F..%252Fbob"),
    ("a b;c", "a%20b%3Bc"),
    ("\u00e9t\u00e9", "%C3%A9t%C3%A9"),
]
DOT_SEGMENTS = [".", ".."]  # RFC 3986: "the current / parent segment", not a name


def segments_after(prefix: str, path: str) -> list[str]:
    assert path.startswith(prefix), path
    return path[len(prefix) :].split("/")


@pytest.mark.parametrize(("name", "quoted"), HOSTILE_SERVERS, ids=[n for n, _ in HOSTILE_SERVERS])
def test_a_hostile_server_name_to_stop_is_one_path_segment_of_this_user(
    runtime: Callable[..., Api], hub: FakeHub, name: str, quoted: str
) -> None:
    runtime(in_hub(hub))("POST", "stop", {"server": name})
    [seen] = hub.seen
    assert seen.method == "DELETE"
    assert segments_after("/hub/api/users/alice/servers/", seen.path) == [quoted]
    assert unquote(quoted) == name


@pytest.mark.parametrize(("name", "quoted"), HOSTILE_SERVERS, ids=[n for n, _ in HOSTILE_SERVERS])
def test_a_hostile_server_name_of_this_runtime_is_one_segment_of_the_switch_path(
    runtime: Callable[..., Api], hub: FakeHub, name: str, quoted: str
) -> None:
    runtime(in_hub(hub, server=name))("POST", "switch", {"runtime_type": "cpu"})
    [seen] = hub.seen
    prefix = "/hub/api/kernelhub/users/alice/servers/"
    assert segments_after(prefix, seen.path) == [quoted, "switch"]


@pytest.mark.parametrize("name", DOT_SEGMENTS)
def test_a_dot_segment_server_name_is_refused_before_the_hub(
    runtime: Callable[..., Api], hub: FakeHub, name: str
) -> None:
    status, body, _ = runtime(in_hub(hub))("POST", "stop", {"server": name})
    assert is_error(status, body, 400)
    assert hub.seen == []


HOSTILE_USERS = [
    ("bob/../carol", "bob%2F..%2Fcarol"),
    ("a?b#c", "a%3Fb%23c"),
    ("%2e%2e", "%252e%252e"),
    ("al ice@example.org", "al%20ice%40example.org"),
]


@pytest.mark.parametrize(("user", "quoted"), HOSTILE_USERS, ids=[u for u, _ in HOSTILE_USERS])
def test_a_hostile_user_name_is_one_segment_in_every_call(
    runtime: Callable[..., Api], hub: FakeHub, jp_asyncio_loop: Any, user: str, quoted: str
) -> None:
    api = runtime(in_hub(hub, user=user, server="s"))
    api("GET")
    api("POST", "switch", {"runtime_type": "cpu"})
    api("POST", "stop", {"server": "t"})
    api("POST", "stop", {"server": ""})
    api("POST", "stop", {"server": "s"})  # this runtime: the hub is asked a moment later
    wait_until(jp_asyncio_loop, lambda: len(hub.seen) == 6)
    assert sorted((s.method, s.path) for s in hub.seen) == sorted([
        ("GET", f"/hub/api/kernelhub/users/{quoted}/runtimes"),
        ("GET", "/hub/api/kernelhub/runtime-types"),
        ("POST", f"/hub/api/kernelhub/users/{quoted}/servers/s/switch"),
        ("DELETE", f"/hub/api/users/{quoted}/servers/t"),
        ("DELETE", f"/hub/api/users/{quoted}/server"),
        ("DELETE", f"/hub/api/users/{quoted}/servers/s"),
    ])  # fmt: skip


# --- bad bodies: refused here, nothing sent ---

BAD_BODIES = [
    # (case, endpoint, raw body, status)
    ("not JSON", "switch", b"runtime_type=cpu", 400),
    ("a JSON list", "switch", b'["cpu"]', 400),
    ("a JSON string", "stop", b'"gpu"', 400),
    ("unknown field", "switch", b'{"runtime_type": "cpu", "user": "bob"}', 400),
    ("the user in a stop's body", "stop", b'{"server": "", "user": "bob"}', 400),
    ("missing field", "switch", b"{}", 400),
    ("empty body", "stop", b"", 400),
    ("wrong type: number", "switch", b'{"runtime_type": 3}', 400),
    ("wrong type: null", "stop", b'{"server": null}', 400),
    ("wrong type: list", "stop", b'{"server": ["gpu"]}', 400),
    ("wrong type: boolean", "switch", b'{"runtime_type": true}', 400),
    ("a 256-character name", "switch", json.dumps({"runtime_type": "x" * 256}).encode(), 400),
    ("a 256-character server", "stop", json.dumps({"server": "x" * 256}).encode(), 400),
    ("over 4096 bytes", "switch", json.dumps({"runtime_type": "x" * 4100}).encode(), 413),
    ("over 4096 bytes of padding", "stop", b'{"server": ""}' + b" " * 4096, 413),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "endpoint", "raw", "expected"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_a_bad_body_is_a_json_4xx_and_the_hub_hears_nothing(
    runtime: Callable[..., Api], hub: FakeHub, case: str, endpoint: str, raw: bytes,
    expected: int,
) -> None:  # fmt: skip
    status, body, _ = runtime(in_hub(hub))("POST", endpoint, raw)
    assert is_error(status, body, expected), (status, body)
    assert hub.seen == []


def test_a_255_character_name_is_the_longest_allowed(
    runtime: Callable[..., Api], hub: FakeHub
) -> None:
    runtime(in_hub(hub))("POST", "stop", {"server": "x" * 255})
    assert [s.path for s in hub.seen] == [f"/hub/api/users/alice/servers/{'x' * 255}"]


# --- the hub unreachable, redirecting; the token's path ---


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def server_log(jp_serverapp: Any, caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """Everything logged: the server's own log and tornado's, at every level."""
    caplog.set_level(logging.DEBUG)
    collect = Collect()
    loggers = [jp_serverapp.log, logging.getLogger("tornado"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collect)
        logger.setLevel(logging.DEBUG)
    yield lambda: "\n".join([*collect.lines, caplog.text])
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(collect)
        logger.setLevel(level)


# every call the menu makes, this runtime being "gpu": the answer is the hub's
CALLS = [("GET", "", None), ("POST", "switch", {"runtime_type": "cpu"}),
         ("POST", "stop", {"server": "cpu2"}), ("POST", "stop", {"server": ""})]  # fmt: skip
OWN_STOP = ("POST", "stop", {"server": "gpu"})  # answered first, the hub asked after


def test_an_unreachable_hub_is_a_502_and_the_token_is_never_shown(
    runtime: Callable[..., Api], server_log: Callable[[], str], jp_asyncio_loop: Any
) -> None:
    env = in_hub(FakeHub())
    env["JUPYTERHUB_API_URL"] = f"http://127.0.0.1:{closed_port()}/hub/api/"
    api = runtime(env)
    for method, path, request in CALLS:
        status, body, response = api(method, path, request)
        assert is_error(status, body, 502), (path, status, body)
        assert body["message"].startswith("the hub did not answer")
        assert TOKEN not in response.body.decode() + str(response.headers)
    log_lines = server_log().count("the hub did not answer (")
    assert log_lines >= len(CALLS)  # the admin is told, in the server's log
    status, _, response = api(*OWN_STOP)
    assert status == 202 and TOKEN not in response.body.decode()
    wait_until(jp_asyncio_loop, lambda: server_log().count("the hub did not answer (") > log_lines)
    assert TOKEN not in server_log()


def test_a_hubs_redirect_is_not_followed_so_the_token_goes_nowhere_else(
    runtime: Callable[..., Api], hubs: Callable[[], FakeHub], server_log: Callable[[], str],
    jp_asyncio_loop: Any,
) -> None:  # fmt: skip
    hub, thief = hubs(), hubs()
    steal = f"http://127.0.0.1:{thief.port}/steal"
    for method, path in [("GET", "/hub/api/kernelhub/users/alice/runtimes"),
                         ("GET", "/hub/api/kernelhub/runtime-types"), ("POST", SWITCH),
                         ("DELETE", "/hub/api/users/alice/servers/cpu2"),
                         ("DELETE", "/hub/api/users/alice/server"),
                         ("DELETE", "/hub/api/users/alice/servers/gpu")]:  # fmt: skip
        hub.answer(method, path, 302, Location=steal)
    api = runtime(in_hub(hub))
    for method, path, request in CALLS:
        status, body, response = api(method, path, request)
        assert not 200 <= status < 300, (path, status, body)  # a redirect is no success
        assert "Location" not in response.headers
        assert TOKEN not in response.body.decode()
    assert api(*OWN_STOP)[0] == 202
    wait_until(jp_asyncio_loop, lambda: len(hub.seen) == 6)
    jp_asyncio_loop.run_until_complete(asyncio.sleep(0.3))  # time to follow, were it to
    assert thief.seen == []
    assert TOKEN not in server_log()


@pytest.mark.parametrize(
    ("call", "method", "path"),
    [(CALLS[1], "POST", SWITCH), (CALLS[2], "DELETE", "/hub/api/users/alice/servers/cpu2")],
    ids=["switch", "stop"],
)
def test_a_hubs_redirect_is_a_502_with_a_message(
    runtime: Callable[..., Api], hubs: Callable[[], FakeHub], call: Any, method: str, path: str
) -> None:
    hub, thief = hubs(), hubs()
    hub.answer(method, path, 302, Location=f"http://127.0.0.1:{thief.port}/steal")
    status, body, _ = runtime(in_hub(hub))(*call)
    assert [s.path for s in hub.seen] == [path] and thief.seen == []
    assert is_error(status, body, 502), (status, body)


def test_a_refusal_of_this_runtimes_own_stop_is_logged_for_the_admin(
    runtime: Callable[..., Api], hub: FakeHub, jp_asyncio_loop: Any, server_log: Callable[[], str]
) -> None:
    hub.answer("DELETE", "/hub/api/users/alice/servers/gpu", 403, {"message": "no, not now"})
    assert runtime(in_hub(hub))(*OWN_STOP)[0] == 202  # the browser heard before the hub
    wait_until(jp_asyncio_loop, lambda: "no, not now" in server_log())
    assert TOKEN not in server_log()


# --- the server's own authentication ---


@pytest.mark.parametrize("auth", ["", "token not-the-servers-token", f"token {TOKEN}"],
                         ids=["none", "wrong", "the-hub-token"])  # fmt: skip
def test_without_the_servers_credentials_nothing_reaches_the_hub(
    runtime: Callable[..., Api], hub: FakeHub, jp_asyncio_loop: Any, auth: str
) -> None:
    api = runtime(in_hub(hub))
    for method, path, request in [*CALLS, OWN_STOP]:
        status, _, _ = api(method, path, request, headers={"Authorization": auth})
        assert status in (401, 403), (path, status)
    jp_asyncio_loop.run_until_complete(asyncio.sleep(0.3))  # the own stop's delay
    assert hub.seen == []
