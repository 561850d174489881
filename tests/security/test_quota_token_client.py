"""The two clients with a token on the way to kernel state, each held to its one URL.

The quota daemon's ``HubApi`` may send its token (which can list every user and stop
every server) only under the hub's API URL: whatever path or redirect it is handed,
it attaches the token nowhere else, and user and server names cannot lead a path out
of the API. The runtime's reporter sends its own token to the hub's API only, at a
bounded rate. (The end-to-end cases, against a real hub and real runtimes, are in
``test_quota_token.py``.)
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from kernelhub_snippets.kernel_reports import check_interval, report_url

from kernelhub.quotas.hub_api import HubApi, HubApiError

QUOTA_TOKEN = secrets.token_hex(32)


# --- the daemon's client: its token goes to the hub's API and nowhere else ------------

API = "http://127.0.0.1:8081/hub/api"


class Recorder(httpx.AsyncBaseTransport):
    """Answers as a hub would (a redirect elsewhere for ``redirect``) and records every
    request's URL and whether it carried the token."""

    def __init__(self, redirect: str = "") -> None:
        self.seen: list[tuple[str, bool]] = []
        self.redirect = redirect

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        carried = request.headers.get("Authorization") == f"token {QUOTA_TOKEN}"
        self.seen.append((str(request.url), carried))
        if self.redirect:
            return httpx.Response(302, headers={"Location": self.redirect})
        path = request.url.path
        if path.endswith("/kernel-reports"):
            return httpx.Response(200, json={"now": "2026-01-01T00:00:00Z", "reports": []})
        if path.endswith("/users"):
            return httpx.Response(200, json={"items": [], "_pagination": {"next": None}})
        return httpx.Response(204)


# names a user could choose, each trying to lead a path out of the API: quoted whole
HOSTILE_NAMES = ["../../user/alice/api/kernels", "a/b", "%2e%2e", "x?y=1#z", "//evil", "..."]
DOT_NAMES = [".", ".."]  # refused outright: no path of the API has such a segment


async def test_every_call_of_the_daemon_goes_under_the_hub_api_with_names_quoted() -> None:
    transport = Recorder()
    hub = HubApi(API, QUOTA_TOKEN, transport=transport)
    try:
        await hub.servers()
        await hub.kernel_reports()
        for name in HOSTILE_NAMES:
            await hub.stop_server(name, "")
            await hub.stop_server("alice", name)
        for name in DOT_NAMES:
            with pytest.raises(HubApiError, match="no hub API path"):
                await hub.stop_server(name, "")
            with pytest.raises(HubApiError, match="no hub API path"):
                await hub.stop_server("alice", name)
    finally:
        await hub.close()
    assert len(transport.seen) == 2 + 2 * len(HOSTILE_NAMES)
    for url, carried in transport.seen:
        assert carried and url.startswith(API + "/"), url
        segments = httpx.URL(url).raw_path.decode().split("/")
        assert not {".", ".."} & set(segments), url  # nothing a parser would resolve


async def test_the_daemon_follows_no_redirect_and_sends_its_token_nowhere_else() -> None:
    elsewhere = "http://127.0.0.1:8000/user/alice/api/kernels"
    transport = Recorder(redirect=elsewhere)
    hub = HubApi(API, QUOTA_TOKEN, transport=transport)
    try:
        assert await hub.kernel_reports() == {}  # a redirect is no answer
        with pytest.raises(HubApiError, match="outside the hub API"):
            await hub._client.get(elsewhere)  # even asked directly, the client refuses
        with pytest.raises(HubApiError, match="outside the hub API"):
            await hub._client.get(API + "/../../user/alice/api/kernels")
    finally:
        await hub.close()
    assert [url for url, _ in transport.seen] == [API + "/kernelhub/kernel-reports"]


# --- the runtime's reporter ------------------------------------------------------------

# KERNELHUB_KERNEL_REPORT_INTERVAL -> seconds between two looks at the kernels
REPORT_INTERVALS = {
    None: 5.0,
    "": 5.0,
    "2.5": 2.5,
    "0": 1.0,  # at least a second: a runtime must not flood the hub
    "-3": 1.0,
    "3600": 60.0,  # at most a minute: the daemon must learn of a busy kernel in time
    "nan": 5.0,
    "soon": 5.0,
}


@pytest.mark.parametrize(("value", "seconds"), REPORT_INTERVALS.items())
def test_the_report_interval_stays_within_its_bounds(value: str | None, seconds: float) -> None:
    assert check_interval(value) == seconds


def test_reports_go_under_the_hub_api_with_names_quoted_whole() -> None:
    assert report_url("http://hub:8081/hub/api/", "a/b", "") == (
        "http://hub:8081/hub/api/kernelhub/users/a%2Fb/servers//kernels"
    )
    assert report_url("http://hub:8081/hub/api", "al", "gpu/1") == (
        "http://hub:8081/hub/api/kernelhub/users/al/servers/gpu%2F1/kernels"
    )
