"""Quota notices inside the notebook, in headless Chromium.

The quota daemon warns before it stops a runtime; besides the hub home page, the
warning shows as a notification in Notebook 7 where the user is working. Here the
warning is written into the quota store of a real hub (as the daemon records it)
for the user's running runtime, and the notebook, opened afterwards, shows it.
Screenshots go to test-artifacts/browser-notices/.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from browser import (
    ACTION_TIMEOUT,
    ARTIFACTS,
    browser_session,
    create_notebook,
    sign_in,
    start_runtime_from_form,
)
from harness import HubProcess

from kernelhub.quotas.store import QuotaStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WARNING = "your runtime will be stopped at 14:10 UTC (in 10 minutes) if it stays idle"


@pytest.fixture(scope="module")
def hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    """A hub of this module's own: notices need the quota store `kernelhub up` gives the
    quota daemon, which the shared hub leaves out."""
    return hub_factory(name="browser-notices", quotas=True)


def test_a_pending_idle_warning_shows_in_the_notebook_once(
    hub: HubProcess,
    username: str,
    user_api: httpx.Client,  # stops the runtime afterwards
) -> None:
    with browser_session(ARTIFACTS / "browser-notices") as (_, page, steps):
        sign_in(page, hub.url, username, hub.password(username))
        page.goto(f"{hub.url}/hub/spawn")
        start_runtime_from_form(page, "cpu")
        # as the daemon records a warning about this running runtime
        with QuotaStore.open(f"sqlite:///{hub.data_dir / 'quotas.sqlite'}") as store:
            store.record_event(username, "", "cpu", "warn", "idle", WARNING)
            store.record_event(username, "other", "cpu", "warn", "idle", "not this runtime's")

        notebook = create_notebook(page)

        toast = notebook.get_by_text(f"Runtime warning: {WARNING}")
        toast.wait_for(timeout=ACTION_TIMEOUT)
        steps.shot("warning-in-notebook", notebook)
        assert notebook.get_by_text("not this runtime's").count() == 0
        hub_home = notebook.get_by_role("button", name="Hub home")
        assert hub_home.count() >= 1
        # the home page says the same
        page.goto(f"{hub.url}/hub/home")
        assert WARNING in page.content()
