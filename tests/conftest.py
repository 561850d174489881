"""Shared fixtures: real `kernelhub up` processes, tokens, sign-in sessions.

Every hub started here is registered so that a failing test's report carries
the hub's log and its runtimes' logs.
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
_running_providers: list[OidcProvider] = []
_user_numbers = itertools.count(1)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("setup", "call"):
        for hub in _running_hubs:
            report.sections.append((f"hub log {hub.data_dir.name}", hub.log()[-LOG_TAIL:]))
            for name, text in hub.runtime_logs().items():
                report.sections.append((f"runtime log {name}", text[-LOG_TAIL // 2 :]))
        for provider in _running_providers:
            text = provider.log_path.read_text(errors="replace")
            report.sections.append(("OIDC provider log", text[-LOG_TAIL // 2 :]))


@pytest.fixture(scope="session")
def passwords() -> dict[str, str]:
    return {"user": secrets.token_urlsafe(12), "admin": secrets.token_urlsafe(33)}


@pytest.fixture(scope="session")
def hub_factory(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[Callable[..., HubProcess]]:
    """Start real hubs (kernelhub up + configurable-http-proxy); all are stopped at the end."""
    started: list[HubProcess] = []

    def start(
        config_text: str | None = None,
        name: str = "hub",
        wait: bool = True,
        db_url: str | None = None,
        runtimes: str = "local",
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> HubProcess:
        data_dir = tmp_path_factory.mktemp(name) / "data"
        write_test_credentials(data_dir, passwords["user"], passwords["admin"])
        hub = HubProcess(
            data_dir=data_dir,
            port=port or free_port(),
            config_text=config_text,
            db_url=db_url,
            runtimes=runtimes,
            env=env or {},
        )
        started.append(hub)
        _running_hubs.append(hub)
        return hub.start(wait=wait)

    yield start
    for hub in started:
        shutdown(hub)


def shutdown(hub: HubProcess) -> None:
    """Stop a hub like Ctrl-C does (runtimes too), then make sure nothing is left."""
    hub.stop(signal.SIGINT)
    for pid in runtime_pids(hub.data_dir):
        os.kill(pid, signal.SIGKILL)
    if hub in _running_hubs:
        _running_hubs.remove(hub)


@pytest.fixture(scope="session")
def hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    """The embedded default: local runtimes, local passwords, no GPU."""
    return hub_factory(name="default")


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
