"""Shared fixtures: real `kernelhub up` processes, tokens, sign-in sessions.

Every hub started here is registered so that a failing test's report carries
the hub's log and its runtimes' logs. A hub lives as long as what started it: a
session fixture's hub until the session ends, a module fixture's hub until the
module's last test is done, and a hub started by a test (or a function fixture)
until that test is done.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from harness import (
    GoogleHub,
    HubProcess,
    OidcProvider,
    PostgresCluster,
    free_port,
    runtime_pids,
    start_google_hub,
    stop_all_runtimes,
    write_test_credentials,
)

LOG_TAIL = 12_000
_running_hubs: list[HubProcess] = []
_stopped_in_teardown: list[HubProcess] = []  # their logs go into a teardown failure's report
_running_providers: list[OidcProvider] = []
_user_numbers = itertools.count(1)
_current_test: list[pytest.Item] = []  # the test being run
_fixture_setups: list[pytest.FixtureRequest] = []  # fixtures being set up, innermost last
_test_hubs: list[HubProcess] = []  # started by the current test itself: stopped after it


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    _current_test.append(item)
    try:
        return (yield)
    finally:
        _current_test.pop()


class _FixtureSetups:
    """Keeps `_fixture_setups`. A plugin of its own: a conftest's pytest_fixture_setup
    is not called for session fixtures (their node, the session, lies above tests/)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Iterator[object]:
        _fixture_setups.append(request)
        try:
            return (yield)
        finally:
            _fixture_setups.pop()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_FixtureSetups(), "kernelhub-fixture-setups")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    _stopped_in_teardown.clear()
    try:
        yield  # the fixtures' teardowns: module hubs stop after their module's last test
    finally:
        while _test_hubs:
            shutdown(_test_hubs.pop())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        hubs = list(_running_hubs)
        if report.when == "teardown":
            hubs += [hub for hub in _stopped_in_teardown if hub not in hubs]
        for hub in hubs:
            report.sections.append((f"hub log {hub.data_dir.name}", hub.log()[-LOG_TAIL:]))
            for name, text in hub.runtime_logs().items():
                report.sections.append((f"runtime log {name}", text[-LOG_TAIL // 2 :]))
        for provider in _running_providers:
            text = provider.log_path.read_text(errors="replace")
            report.sections.append(("OIDC provider log", text[-LOG_TAIL // 2 :]))


@pytest.fixture(scope="session")
def passwords() -> dict[str, str]:
    """The first account's password, pre-seeded in every hub_factory hub: user `admin`.
    Other users get theirs from HubProcess.password(user)."""
    return {"admin": secrets.token_urlsafe(18)}


def _quota_module(item: pytest.Item | None) -> bool:
    """Whether ``item``'s module tests the quota daemon (tests/test_quota*.py)."""
    return item is not None and item.path.name.startswith("test_quota")


@pytest.fixture(scope="session")
def hub_factory(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[Callable[..., HubProcess]]:
    """Start real hubs (kernelhub up + configurable-http-proxy).

    Each hub is stopped when what started it ends: the fixture that called this
    (session, module or function scoped) is torn down, or the test that called it
    is done. ``quotas``: whether `kernelhub up` runs the quota daemon
    (KERNELHUB_QUOTAS); by default only hubs of tests/test_quota*.py modules do, and
    session-wide hubs never. KERNELHUB_QUOTAS in ``env`` wins.
    """
    started: list[HubProcess] = []

    def start(
        config_text: str | None = None,
        name: str = "hub",
        wait: bool = True,
        db_url: str | None = None,
        runtimes: str = "local",
        env: dict[str, str] | None = None,
        port: int | None = None,
        quotas: bool | None = None,
        args: list[str] | None = None,
    ) -> HubProcess:
        owner = _fixture_setups[-1] if _fixture_setups else None
        test = _current_test[-1] if _current_test else None
        if quotas is None:
            quotas = _quota_module(test) and (owner is None or owner.scope != "session")
        env = dict(env or {})
        if not quotas:
            env.setdefault("KERNELHUB_QUOTAS", "0")
        data_dir = tmp_path_factory.mktemp(name) / "data"
        write_test_credentials(data_dir, passwords["admin"])
        hub = HubProcess(
            data_dir=data_dir,
            port=port or free_port(),
            config_text=config_text,
            db_url=db_url,
            runtimes=runtimes,
            env=env,
            args=list(args or []),
        )
        started.append(hub)
        _running_hubs.append(hub)
        if owner is not None:
            # runs after the fixture's own teardown (finalizers run last added first)
            owner.addfinalizer(lambda: shutdown(hub))
        else:
            _test_hubs.append(hub)
        return hub.start(wait=wait)

    yield start
    for hub in started:  # any left over
        shutdown(hub)


def shutdown(hub: HubProcess) -> None:
    """Stop a hub like Ctrl-C does (runtimes too), then make sure nothing is left."""
    if hub not in _running_hubs:
        return
    hub.stop(signal.SIGINT)
    for pid in runtime_pids(hub.data_dir):
        os.kill(pid, signal.SIGKILL)
    _running_hubs.remove(hub)
    _stopped_in_teardown.append(hub)


@pytest.fixture(scope="session")
def hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    """The embedded default: local runtimes, local passwords, no GPU, no quota daemon."""
    return hub_factory(name="default", quotas=False)


@pytest.fixture
def username() -> str:
    """A fresh user name per test, so tests never share runtimes or files."""
    return f"user{next(_user_numbers)}"


@pytest.fixture
def user_api(hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    """REST client holding `username`'s token; stops the user's runtimes afterwards."""
    with hub.api(hub.token(username)) as api:
        yield api
        stop_all_runtimes(api, username)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on loopback, in a throwaway cluster."""
    cluster = PostgresCluster(free_port())
    cluster.start()
    try:
        yield cluster.create_database("kernelhub")
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A real OpenID Connect provider process standing in for Google's endpoints."""
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    provider = OidcProvider(free_port(), log).start()
    _running_providers.append(provider)
    yield provider
    _running_providers.remove(provider)
    provider.stop()


@pytest.fixture(scope="session")
def google(hub_factory: Callable[..., HubProcess], oidc_provider: OidcProvider) -> GoogleHub:
    """A hub whose users sign in with Google (the real OIDC provider process)."""
    return start_google_hub(hub_factory, oidc_provider, "google")
