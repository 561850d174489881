"""Google sign-in: GoogleOAuthenticator (kernelhub's subclass) against a real OIDC provider.

The provider is a real process (oidc-provider-mock) whose endpoints the authenticator
is pointed at through its own traits (authorize_url, token_url, userdata_url). Its
users carry the claims Google's userinfo returns: email, verified_email, hd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from harness import (
    GOOGLE_DOMAIN,
    GoogleHub,
    HubProcess,
    OidcProvider,
    free_port,
    google_user,
    start_google_hub,
    stop_all_runtimes,
    text_of,
    wait_ready,
    wait_until,
    xsrf_token,
)

pytestmark = pytest.mark.slow

DOMAIN = GOOGLE_DOMAIN  # users' e-mails; with one hosted domain user names drop it


def page_text(response: httpx.Response) -> str:
    return text_of(response.text)


def assert_no_secret(google: GoogleHub, *responses: httpx.Response) -> None:
    for response in responses:
        assert google.client_secret not in response.text
    assert google.client_secret not in google.hub.log()


def test_kernelhub_up_signs_in_with_google_when_a_client_is_configured(google: GoogleHub) -> None:
    assert f"Sign-in: Google (accounts in {DOMAIN})" in google.hub.log()
    login = httpx.get(f"{google.hub.url}/hub/login")
    assert "Sign in with Google" in page_text(login)
    assert_no_secret(google, login)


def test_a_workspace_user_signs_in_and_gets_the_runtime_form(google: GoogleHub) -> None:
    session, response = google.sign_in(f"alice@{DOMAIN}")

    assert response.status_code == 200, page_text(response)
    assert "Change runtime type" in page_text(response)
    assert session.get("/hub/api/user").json()["name"] == "alice"
    assert_no_secret(google, response)


def test_an_admin_user_reaches_the_admin_page(google: GoogleHub) -> None:
    session, _ = google.sign_in(f"carol@{DOMAIN}")

    assert session.get("/hub/api/user").json()["admin"] is True
    assert session.get("/hub/admin").status_code == 200


@pytest.mark.parametrize(
    ("email", "verified", "status", "message", "logged"),
    [
        pytest.param(
            "bob@other.org",
            True,
            403,
            "bob@other.org is not in an allowed Google Workspace domain (allowed: example.com)",
            "Refused bob@other.org: Google Workspace domain 'other.org' is not one of example.com",
            id="outside-the-domain",
        ),
        pytest.param(
            "erin@gmail.com",
            True,
            403,
            "erin@gmail.com is not in an allowed Google Workspace domain",
            "Refused erin@gmail.com: Google Workspace domain '' is not one of example.com",
            id="personal-account",
        ),
        pytest.param(
            f"dave@{DOMAIN}",
            False,
            403,
            f"Login with unverified email dave@{DOMAIN} is not allowed",
            f"Login with unverified email dave@{DOMAIN} is not allowed",
            id="unverified-email",
        ),
        pytest.param(
            f"mallory@{DOMAIN}",
            True,
            403,
            f"The account mallory@{DOMAIN} is blocked on this hub. Contact an administrator.",
            f"Refused mallory@{DOMAIN}: blocked user mallory",
            id="blocked-user",
        ),
    ],
)
def test_refused_accounts_see_why_and_the_log_says_so(
    google: GoogleHub, email: str, verified: bool, status: int, message: str, logged: str
) -> None:
    session, response = google.sign_in(email, verified)

    assert response.status_code == status
    assert message in page_text(response)
    assert "Traceback" not in response.text
    assert logged in google.hub.log()
    assert session.get("/hub/api/user").status_code == 403, "a refused user is not signed in"
    assert_no_secret(google, response)


def test_an_oauth_state_mismatch_asks_to_sign_in_again(google: GoogleHub) -> None:
    google.provider.set_user(f"frank@{DOMAIN}", **google_user(f"frank@{DOMAIN}"))
    session = httpx.Client(base_url=google.hub.url, timeout=30, follow_redirects=True)
    first_form = session.get("/hub/oauth_login")
    session.get("/hub/oauth_login")  # a second tab: its state replaces the first's cookie
    answer = session.post(str(first_form.url), data={"sub": f"frank@{DOMAIN}"})
    response = session.get(answer.headers["location"]) if answer.is_redirect else answer

    assert response.status_code == 400
    assert (
        "Your sign-in could not be completed: it expired or was started in another browser "
        "tab (OAuth state mismatch). Please sign in again."
    ) in page_text(response)
    assert "Refused an OAuth callback: OAuth state mismatch" in google.hub.log()
    assert_no_secret(google, response)


@pytest.fixture
def short_lived_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(free_port(), tmp_path_factory.mktemp("oidc") / "down.log").start()
    yield provider
    provider.stop()


def test_the_provider_down_is_a_clear_page_not_a_traceback(
    hub_factory: Callable[..., HubProcess], short_lived_provider: OidcProvider
) -> None:
    google = start_google_hub(hub_factory, short_lived_provider, "google-down")
    email = f"grace@{DOMAIN}"
    short_lived_provider.set_user(email, **google_user(email))
    session = httpx.Client(base_url=google.hub.url, timeout=30, follow_redirects=True)
    form = session.get("/hub/oauth_login")
    answer = session.post(str(form.url), data={"sub": email}, follow_redirects=False)
    short_lived_provider.stop()  # Google goes down between the consent and the callback

    response = session.get(answer.headers["location"])

    assert response.status_code == 503
    assert (
        "Google sign-in cannot be reached right now (no connection). Please try again in a minute."
    ) in page_text(response)
    assert "Traceback" not in response.text
    assert "Google sign-in is unreachable while" in google.hub.log()
    assert_no_secret(google, response)


def start_from_form(session: httpx.Client) -> None:
    session.get("/hub/spawn")
    response = session.post("/hub/spawn", data={"runtime": "cpu", "_xsrf": xsrf_token(session)})
    assert response.status_code == 200, page_text(response)


def test_one_user_cannot_reach_another_users_runtime_or_files(google: GoogleHub) -> None:
    alice, _ = google.sign_in(f"alice@{DOMAIN}")
    bob, _ = google.sign_in(f"bob@{DOMAIN}")
    tokens = {}
    for name, session in (("alice", alice), ("bob", bob)):
        start_from_form(session)
        tokens[name] = google.hub.token(name)
    with google.hub.api(tokens["alice"]) as alice_api, google.hub.api(tokens["bob"]) as bob_api:
        try:
            wait_ready(alice_api, "alice")
            wait_ready(bob_api, "bob")
            secret_file = google.hub.data_dir / "users" / "alice" / "private.txt"
            secret_file.write_text("alice's eyes only")
            assert alice.get("/user/alice/files/private.txt").text == "alice's eyes only"

            for path in ("tree", "api/contents/private.txt", "files/private.txt", "api/kernels"):
                through_browser = bob.get(f"/user/alice/{path}")
                assert through_browser.status_code == 403, (path, through_browser.url)
                assert "alice's eyes only" not in through_browser.text
                with_token = bob_api.get(f"{google.hub.url}/user/alice/{path}")
                assert with_token.status_code == 403, path
                assert "alice's eyes only" not in with_token.text
            assert bob_api.get("users/alice").status_code == 404  # not even visible
            assert bob_api.delete("users/alice/server").status_code in (403, 404)
            wait_until(lambda: alice.get("/user/alice/api/status").status_code == 200)
        finally:
            stop_all_runtimes(alice_api, "alice")
            stop_all_runtimes(bob_api, "bob")


def test_the_client_can_come_from_oauthenticators_environment_variables(
    hub_factory: Callable[..., HubProcess], oidc_provider: OidcProvider
) -> None:
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    client_id, secret = oidc_provider.register_client(f"{hub_url}/hub/oauth_callback")
    endpoints = "\n".join(
        line
        for line in oidc_provider.google_config(client_id, secret, hub_url).splitlines()
        if "client_id" not in line and "client_secret" not in line
    )
    env = {"OAUTH_CLIENT_ID": client_id, "OAUTH_CLIENT_SECRET": secret, "HOSTED_DOMAIN": DOMAIN}
    google = GoogleHub(
        hub_factory(endpoints, name="google-env", port=port, env=env), oidc_provider, secret
    )

    session, response = google.sign_in(f"heidi@{DOMAIN}")

    assert f"Sign-in: Google (accounts in {DOMAIN})" in google.hub.log()
    assert session.get("/hub/api/user").json()["name"] == "heidi"
    assert_no_secret(google, response)


def test_after_signing_out_the_runtime_needs_a_new_sign_in(google: GoogleHub) -> None:
    session, _ = google.sign_in(f"ivan@{DOMAIN}")
    start_from_form(session)
    with google.hub.api(google.hub.token("ivan")) as api:
        try:
            wait_ready(api, "ivan")
            before = session.get("/user/ivan/tree")
            assert before.status_code == 200 and "/user/ivan/tree" in str(before.url)

            session.get("/hub/logout")

            after = session.get("/user/ivan/tree")
            assert "/hub/login" in str(after.url), after.url
            assert "Sign in with Google" in page_text(after)
        finally:
            stop_all_runtimes(api, "ivan")
