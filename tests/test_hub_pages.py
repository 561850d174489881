"""Specification of the hub's own pages: kernelhub's name and logo, the sign-in line,
and the home page's runtime list (type, age, time left, actions).

Fast: the templates are rendered by Jinja from the real template folders, in the
order a hub with local sign-in searches them (kernelhub's, nativeauthenticator's,
JupyterHub's); the runtime rows come from the pure functions the home page uses.
The browser tests (test_browser_local.py, test_browser_google.py) show the same pages
served by real hubs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jupyterhub._data import DATA_FILES_PATH
from nativeauthenticator.handlers import TEMPLATE_DIR as NATIVE_TEMPLATES

from kernelhub.hubapp.branding import (
    LOGO_FILE,
    TEMPLATE_DIR,
    SignInMethod,
    add_base_templates,
    sign_in_method,
)
from kernelhub.hubapp.home import (
    QUOTAS_OFF,
    UNREADABLE,
    HomeRuntimes,
    ServerState,
    build_rows,
    format_span,
    time_left,
)
from kernelhub.quotas.policy import Limits

JUPYTERHUB_TEMPLATES = str(Path(DATA_FILES_PATH) / "templates")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LOCAL = SignInMethod("local", "local accounts", "your user name and password")
GOOGLE = SignInMethod("service", "Google sign-in", "use your Google account in example.org")


def environment(*paths: str) -> Environment:
    """A sync twin of the hub's template environment (JupyterHub's loader layout)."""
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([JUPYTERHUB_TEMPLATES])}, "/"),
            FileSystemLoader(list(paths)),
        ]
    )
    env = Environment(loader=loader, autoescape=True)
    assert add_base_templates(env)
    return env


def page_vars(**extra: object) -> dict[str, object]:
    return {
        "base_url": "/hub/",
        "static_url": lambda path, include_version=True: f"/hub/static/{path}",
        "xsrf": "x",
        "xsrf_token": "x",
        **extra,
    }


LOCAL_HUB = (TEMPLATE_DIR, NATIVE_TEMPLATES, JUPYTERHUB_TEMPLATES)
GOOGLE_HUB = (TEMPLATE_DIR, JUPYTERHUB_TEMPLATES)


# --- name, logo, sign-in ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "template", "sign_in", "form_field"),
    [
        (LOCAL_HUB, "native-login.html", LOCAL, 'name="password"'),
        (GOOGLE_HUB, "login.html", GOOGLE, "Sign in with Google"),
    ],
)
def test_the_sign_in_page_has_the_name_logo_form_and_which_sign_in(
    paths: tuple[str, ...], template: str, sign_in: SignInMethod, form_field: str
) -> None:
    html = (
        environment(*paths)
        .get_template(template)
        .render(**page_vars(kernelhub_sign_in=sign_in, login_service="Google"))
    )
    assert "<title>kernelhub</title>" in html
    assert 'alt="kernelhub logo"' in html and 'src="/hub/logo"' in html
    assert '<span class="kernelhub-name ms-2">kernelhub</span>' in html
    assert f"This hub uses <strong>{sign_in.name}</strong>" in html
    assert form_field in html  # the page it extends is still there


def test_with_local_sign_in_every_page_keeps_the_change_password_link() -> None:
    """page.html extends nativeauthenticator's page.html, not JupyterHub's, there."""
    user = {"name": "ann", "admin": False}
    for paths, link in ((LOCAL_HUB, True), (GOOGLE_HUB, False)):
        html = (
            environment(*paths)
            .get_template("page.html")
            .render(**page_vars(user=user, no_spawner_check=True))
        )
        assert ('href="/hub/change-password"' in html) is link
        assert 'alt="kernelhub logo"' in html


def test_the_logo_is_an_installed_svg() -> None:
    svg = Path(LOGO_FILE).read_text()
    assert svg.lstrip().startswith("<svg") and "<title" in svg and "<script" not in svg


@pytest.mark.parametrize(
    ("settings", "kind", "name", "detail"),
    [
        ({}, "local", "local accounts", "password you have on this hub"),
        ({"enable_signup": True}, "local", "local accounts", "administrator's approval"),
        ({"enable_signup": True, "open_signup": True}, "local", "local accounts", "sign up"),
    ],
)
def test_local_sign_in_is_named_from_the_authenticator(
    settings: dict[str, bool], kind: str, name: str, detail: str
) -> None:
    from kernelhub.signin.local import LocalPasswordAuthenticator

    authenticator = LocalPasswordAuthenticator(add_new_table=False, **settings)
    method = sign_in_method(authenticator)
    assert (method.kind, method.name) == (kind, name)
    assert detail in method.detail


def test_google_sign_in_is_named_with_its_workspace_domains() -> None:
    from kernelhub.signin.google import KernelhubGoogleAuthenticator

    authenticator = KernelhubGoogleAuthenticator(hosted_domain=["example.org", "example.com"])
    method = sign_in_method(authenticator)
    assert (method.kind, method.name) == ("service", "Google sign-in")
    assert method.detail == "use your Google account in example.org or example.com"


# --- the runtime list --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=59), "under a minute"),
        (timedelta(minutes=5, seconds=59), "5 min"),
        (timedelta(hours=1), "1 h"),
        (timedelta(hours=2, minutes=5), "2 h 5 min"),
        (timedelta(days=1), "1 d"),
        (timedelta(days=3, hours=4, minutes=59), "3 d 4 h"),
    ],
)
def test_durations_read_as_people_say_them(span: timedelta, text: str) -> None:
    assert format_span(span) == text


STARTED = NOW - timedelta(hours=2, minutes=30)


@pytest.mark.parametrize(
    ("limits", "runtime_type", "text", "stop_at"),
    [
        (Limits(), "cpu", "9 h 30 min", NOW + timedelta(hours=9, minutes=30)),  # 12 h default
        (Limits(max_session_hours={"gpu": 3}), "gpu", "30 min", NOW + timedelta(minutes=30)),
        (Limits(max_session_hours={"*": 2}), "gpu", "stopping now", NOW - timedelta(minutes=30)),
        (Limits(max_session_hours={"cpu": None}), "cpu", "no limit", None),
        (QUOTAS_OFF, "cpu", "no limit", None),
        (UNREADABLE, "cpu", "unknown", None),
    ],
)
def test_time_left_is_the_maximum_session_length_the_quota_daemon_enforces(
    limits: Limits | str, runtime_type: str, text: str, stop_at: datetime | None
) -> None:
    assert time_left(limits, runtime_type, STARTED, NOW) == (text, stop_at)


def state(name: str, runtime: str = "", **kw: object) -> ServerState:
    fields: dict[str, object] = {
        "display_name": "",
        "started": None,
        "active": False,
        "ready": False,
        "pending": "",
    }
    fields.update(kw)
    return ServerState(name=name, runtime=runtime, **fields)  # type: ignore[arg-type]


def rows_of(*states: ServerState, limits: Limits | str = QUOTAS_OFF) -> list:
    return build_rows(
        states,
        {"cpu": "None (CPU)", "cpu-large": "Large CPU"},
        "cpu",
        limits,
        NOW,
        lambda name: f"/user/ann/{name}/" if name else "/user/ann/",
        lambda name: f"/hub/spawn/ann/{name}" if name else "/hub/spawn/ann",
    )


def test_runtime_rows_say_type_status_age_and_time_left() -> None:
    rows = rows_of(
        state("train", "cpu-large", started=STARTED, active=True, ready=True),
        state("old", "cpu-large"),
        state("", started=STARTED, active=True),  # started via REST: the default type
        limits=Limits(max_session_hours={"cpu": 4}),
    )
    table = [
        (r.name, r.label, r.type_label, r.status, r.age, r.time_left, r.spawn_url) for r in rows
    ]
    assert table == [
        ("", "Default", "None (CPU)", "starting", "2 h 30 min", "1 h 30 min", "/hub/spawn/ann"),
        ("old", "old", "Large CPU", "stopped", "", "", "/hub/spawn/ann/old"),
        (
            "train",
            "train",
            "Large CPU",
            "running",
            "2 h 30 min",
            "9 h 30 min",
            "/hub/spawn/ann/train",
        ),
    ]
    assert rows[2].stop_at_utc == "2026-03-02 21:30 UTC"


def test_a_server_being_stopped_or_never_started_says_so() -> None:
    stopping, fresh = rows_of(
        state("", "cpu", started=STARTED, active=True, ready=True, pending="stop"),
        state("new"),
    )
    assert (stopping.status, fresh.status, fresh.type_label) == (
        "stopping",
        "stopped",
        "not chosen yet",
    )


def test_user_text_in_the_runtime_table_is_escaped() -> None:
    evil = '"><script>alert(1)</script>'
    rows = rows_of(state("evil", evil, display_name=evil, started=STARTED, active=True, ready=True))
    html = (
        environment(*LOCAL_HUB)
        .get_template("kernelhub-runtimes.html")
        .render(
            **page_vars(
                kernelhub_runtimes=lambda: HomeRuntimes(rows, "a <b>note</b>", "off"),
                user={"escaped_name": "ann"},
                allow_named_servers=True,
                named_server_limit_per_user=0,
            )
        )
    )
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-runtime-type="&#34;&gt;&lt;script&gt;' in html
    assert "a &lt;b&gt;note&lt;/b&gt;" in html
    assert unescape(html).count(evil) == 3  # label, type and its data attribute
