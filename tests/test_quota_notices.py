"""The quota daemon's warnings, stops and flags on the hub home page.

A real hub (local runtimes) and the quota store `kernelhub up` gives
kernelhub-quotad; events are written into that store as the daemon records them,
and the home page is read by a user signed in through the login form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from harness import (
    HubProcess,
    runtime_pids,
    sign_in,
    start_runtime,
    stop_all_runtimes,
    text_of,
    wait_until,
)

from kernelhub.quotagate.notices import Notice, RunningServer, build_notices
from kernelhub.quotas.store import Flag, QuotaStore

pytestmark = pytest.mark.slow

SESSION_STOP = "your GPU runtime was stopped after 12 h, the maximum session length"
# the hub's QuotaGate reads a store that cannot be opened; the daemon keeps its own
BROKEN_CONFIG = 'c.QuotaGate.db_url = "sqlite:////nonexistent-kernelhub-dir/quotas.sqlite"\n'


@pytest.fixture(scope="module")
def notices_hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(name="quota-notices")


@pytest.fixture
def store(notices_hub: HubProcess) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{notices_hub.data_dir / 'quotas.sqlite'}") as opened:
        yield opened


@pytest.fixture
def session(notices_hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    client = sign_in(notices_hub, username, notices_hub.password(username))
    yield client
    client.close()


def home(session: httpx.Client) -> httpx.Response:
    response = session.get("/hub/home")
    assert response.status_code == 200, response.text
    return response


def ago(**delta: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(**delta)


def test_a_stop_is_shown_on_the_next_visit_with_runtime_server_time_and_reason(
    store: QuotaStore, session: httpx.Client, username: str
) -> None:
    stopped_at = ago(hours=1)
    store.record_event(
        username, "train", "gpu", "stop", "max-session-age", SESSION_STOP, {}, stopped_at
    )
    old = "your runtime was stopped after 60 minutes without activity"
    store.record_event(username, "old", "cpu", "stop", "idle", old, {}, ago(hours=30))

    response = home(session)

    text = text_of(response.text)
    assert SESSION_STOP in text
    assert "Runtime stopped" in text
    assert "GPU runtime, train" in text  # the runtime type's display name and the server
    assert f"({stopped_at:%Y-%m-%d %H:%M} UTC)" in text
    assert "alert alert-danger" in response.text
    assert old not in text, "stops older than a day are not shown"
    # the server list is still there, below the notices
    assert text.index(SESSION_STOP) < text.index("Your runtimes")


def test_a_warning_is_shown_while_its_runtime_runs_and_not_once_it_stopped(
    notices_hub: HubProcess, store: QuotaStore, session: httpx.Client, username: str
) -> None:
    warning = "your runtime will be stopped in 10 minutes: 50 minutes without activity"
    gone = "a warning for a runtime that is no longer running"
    with notices_hub.api(notices_hub.token(username)) as api:
        try:
            start_runtime(api, username, "work", runtime="cpu")
            store.record_event(username, "work", "cpu", "warn", "idle", warning)
            store.record_event(username, "gone", "cpu", "warn", "idle", gone, {}, ago(hours=1))

            response = home(session)

            text = text_of(response.text)
            assert warning in text
            assert "Runtime warning" in text
            assert "None (CPU) runtime, work" in text
            assert "alert alert-warning" in response.text
            assert gone not in text, "no warning for a server that is not running"
        finally:
            stop_all_runtimes(api, username)

    # stopped (here by the user): its warning is history, not pending
    wait_until(lambda: warning not in text_of(home(session).text), what="the warning to go")


def test_a_warning_followed_by_a_stop_shows_only_the_stop(
    store: QuotaStore, session: httpx.Client, username: str
) -> None:
    warning = "your GPU runtime will be stopped in 1 h: maximum session length 12 h"
    store.record_event(username, "", "gpu", "warn", "max-session-age", warning, {}, ago(hours=2))
    store.record_event(
        username, "", "gpu", "stop", "max-session-age", SESSION_STOP, {}, ago(hours=1)
    )

    text = text_of(home(session).text)

    assert SESSION_STOP in text
    assert "GPU runtime, default server" in text
    assert warning not in text


def runtime_token(hub: HubProcess, user: str) -> str:
    """The JUPYTERHUB_API_TOKEN the hub gave ``user``'s (one) local runtime."""
    (pid,) = runtime_pids(hub.data_dir, user)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(e for e in environ if e.startswith(b"JUPYTERHUB_API_TOKEN=")).decode()[21:]


def test_a_runtime_reads_its_users_notices_with_its_own_token_and_nobody_elses(
    notices_hub: HubProcess, store: QuotaStore, username: str
) -> None:
    warning = "your runtime will be stopped at 14:10 UTC (in 10 minutes) if it stays idle"
    other = f"{username}-other"
    with notices_hub.api(notices_hub.token(username)) as api:
        try:
            start_runtime(api, username, "", runtime="cpu")
            store.record_event(username, "", "cpu", "warn", "idle", warning)
            with notices_hub.api(runtime_token(notices_hub, username)) as runtime:
                own = runtime.get(f"kernelhub/notices/{username}")
                others = runtime.get(f"kernelhub/notices/{other}")
        finally:
            stop_all_runtimes(api, username)

    assert own.status_code == 200, own.text
    (notice,) = own.json()["notices"]
    assert notice["kind"] == "warn" and notice["message"] == warning
    assert notice["server"] == "" and notice["runtime_type"] == "None (CPU)"
    assert notice["title"] == "Runtime warning" and notice["id"].startswith("warn-")
    assert others.status_code in (403, 404)  # another user's: not even whether they exist
    anonymous = httpx.get(f"{notices_hub.url}/hub/api/kernelhub/notices/{username}")
    assert anonymous.status_code == 403 and set(anonymous.json()) == {"status", "message"}


def test_another_users_events_and_flag_are_not_shown(
    store: QuotaStore, session: httpx.Client, username: str
) -> None:
    other = f"{username}-other"
    secret = "the other user's runtime was stopped: it behaved like mining"
    store.record_event(other, "", "gpu", "stop", "mining-like", secret)
    store.flag(other, "mining-like", block_gpu=True)
    store.record_event(username, "", "cpu", "stop", "idle", "your own stop")

    response = home(session)

    text = text_of(response.text)
    assert "your own stop" in text
    assert secret not in text
    assert "GPU runtimes are blocked" not in text


def test_a_gpu_block_is_shown_without_the_detectors_explanation(
    store: QuotaStore, session: httpx.Client, username: str
) -> None:
    explanation = "Runtime 'x': mining, score 0.93. Signals: pool-port (+0.40): 3333"
    store.flag(username, explanation, block_gpu=True)

    response = home(session)

    text = text_of(response.text)
    assert "GPU runtimes are blocked for your account" in text
    assert "an administrator will review it" in text
    assert "pool-port" not in text, "the detector's signals stay with administrators"
    assert "alert alert-danger" in response.text


def test_the_gpu_block_notice_keeps_its_words_and_names_no_reason() -> None:
    """build_notices on its own: the flag notice reads as it always did, the stored
    reason (the detector's explanation) nowhere in it."""
    flagged_at = datetime(2026, 11, 27, 15, 0, 30, tzinfo=UTC)
    flag = Flag(
        username="ann", flagged_at=flagged_at, reason="pool_port: 203.0.113.7", block_gpu=True
    )

    (notice,) = build_notices([], flag, {}, flagged_at + timedelta(hours=1))

    assert (notice.kind, notice.time, notice.title) == ("flag", flagged_at, "GPU runtimes blocked")
    assert notice.message == (
        "GPU runtimes are blocked for your account (flagged for review on 2026-11-27 15:00 UTC); "
        "an administrator will review it. CPU runtimes are not affected."
    )
    assert notice.to_json()["reason"] == ""
    unblocked = Flag(username="ann", flagged_at=flagged_at, reason="a note", block_gpu=False)
    assert build_notices([], unblocked, {}, flagged_at) == []


def test_html_in_a_message_is_escaped(
    store: QuotaStore, session: httpx.Client, username: str
) -> None:
    store.record_event(
        username,
        "<i>srv</i>",
        "<b>type</b>",
        "stop",
        "idle",
        '<script>alert("x")</script><b>stopped</b>',
    )

    response = home(session)

    assert '<script>alert("x")</script>' not in response.text
    assert "<b>stopped</b>" not in response.text
    assert "&lt;b&gt;stopped&lt;/b&gt;" in response.text
    assert "&lt;i&gt;srv&lt;/i&gt;" in response.text
    assert "&lt;b&gt;type&lt;/b&gt;" in response.text
    assert '<script>alert("x")</script><b>stopped</b>' in text_of(response.text)


def test_an_unreadable_quota_store_leaves_the_home_page_without_notices(
    hub_factory: Callable[..., HubProcess], username: str
) -> None:
    broken = hub_factory(BROKEN_CONFIG, name="quota-notices-broken")
    # the daemon's own store is fine: an event there would show, were the hub to read it
    with QuotaStore.open(f"sqlite:///{broken.data_dir / 'quotas.sqlite'}") as daemon_store:
        daemon_store.record_event(username, "", "gpu", "stop", "idle", SESSION_STOP)

    client = sign_in(broken, username, broken.password(username))
    response = client.get("/hub/home")
    client.close()

    assert response.status_code == 200, response.text
    assert "Your runtimes" in text_of(response.text)
    assert "kernelhub-notices" not in response.text
    assert SESSION_STOP not in text_of(response.text)
    assert f"Quota notices for {username} left out (quota store unreadable)" in broken.log()


def test_pending_warnings_are_one_per_reason_and_newest_first() -> None:
    """build_notices on its own: the ordering and de-duplication the page relies on."""
    now = datetime.now(UTC)
    started = now - timedelta(hours=3)

    def event(id: int, kind: str, server: str, hours_ago: float, reason: str = "idle") -> object:
        return _Event(id, now - timedelta(hours=hours_ago), server, "gpu", kind, reason, f"m{id}")

    events = [
        event(1, "warn", "a", 4),  # before the running session started
        event(2, "warn", "a", 2),
        event(3, "warn", "a", 1),  # the same reason again: newest only
        event(4, "warn", "a", 0.5, "max-session-age"),
        event(5, "stop", "b", 0.2),
    ]
    running = {"a": RunningServer("a", started)}

    notices = build_notices(events, None, running, now, {"gpu": "GPU"})

    assert [(n.kind, n.message) for n in notices] == [
        ("stop", "m5"),
        ("warn", "m4"),
        ("warn", "m3"),
    ]
    assert all(isinstance(n, Notice) and n.runtime_type == "GPU" for n in notices)
    assert [n.dismissible for n in notices] == [True, False, False]


class _Event:
    """An Event row's fields, as build_notices reads them."""

    def __init__(
        self,
        id: int,
        time: datetime,
        server: str,
        runtime_type: str,
        kind: str,
        reason: str,
        message: str,
    ) -> None:
        self.id, self.time, self.server, self.runtime_type = id, time, server, runtime_type
        self.kind, self.reason, self.message = kind, reason, message
