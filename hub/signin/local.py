"""Local sign-in: each person signs in with a password of their own (the embedded default).

This is nativeauthenticator's NativeAuthenticator: sign-up at /hub/signup, approval by
an administrator at /hub/authorize, passwords stored only as bcrypt hashes (with their
salt) in the hub's database, /hub/change-password. kernelhub changes:

- **No sign-up is approved by its name.** NativeAuthenticator approves a sign-up at
  once when its name is in ``admin_users`` or ``allowed_users``, so whoever signed up
  first as a configured administrator would become one. Here only ``open_signup``
  skips approval.
- **The first account exists before the hub serves a request.** Its password comes
  from the credentials file `kernelhub up` writes (kernelhub.launcher.credentials),
  so nobody can sign up as ``admin`` first.
- **Accounts for the operator.** `kernelhub user add NAME` and `reset-password`
  (through kernelhub's REST API) create approved accounts with generated passwords.
- **Password checks** compare in constant time (``bcrypt.checkpw``), and a password
  longer than bcrypt's 72 bytes is refused instead of failing with a server error
  (bcrypt 5 raises on those).
- **Approve and discard links** (GET requests on /hub/authorize) are refused when
  the browser says another site sent them, so a link elsewhere cannot approve an
  account through an administrator's session.
- Passwords of at least 8 characters that are not among common ones; 10 wrong
  passwords in a row lock an account for a minute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator import handlers as native
from nativeauthenticator.handlers import DiscardHandler, SignUpHandler, ToggleAuthorizationHandler
from nativeauthenticator.orm import UserInfo
from tornado import web
from tornado.escape import url_escape
from tornado.httputil import url_concat
from traitlets import Bool, Unicode, default

from kernelhub.executor import run_blocking
from kernelhub.launcher.credentials import MAX_PASSWORD_BYTES, MIN_PASSWORD, read_first_account
from kernelhub.signin.names import normalize_user_name, user_name_problem
from kernelhub.signin.passwords import AccountError, hash_password, password_matches


def _is_valid_password(self: UserInfo, password: str) -> bool:
    return password_matches(self.password, password)


# nativeauthenticator's login and change-password pages check passwords with this
# method, which compares hashes with `==` and raises on passwords over 72 bytes
UserInfo.is_valid_password = _is_valid_password


def _sent_from_another_site(handler: web.RequestHandler) -> bool:
    # browsers send Sec-Fetch-Site with every request; "none" is a typed URL or bookmark
    return handler.request.headers.get("Sec-Fetch-Site", "same-origin") not in (
        "same-origin",
        "none",
    )


class SameSiteToggleAuthorizationHandler(ToggleAuthorizationHandler):
    """/hub/authorize/NAME (approve or revoke), only from the hub's own pages."""

    async def get(self, slug: str) -> None:
        if _sent_from_another_site(self):
            raise web.HTTPError(403, "Approve accounts from the hub's own Authorize page.")
        await super().get(slug)


class SameSiteDiscardHandler(DiscardHandler):
    """/hub/discard/NAME (delete a sign-up), only from the hub's own pages."""

    async def get(self, user_name: str) -> None:
        if _sent_from_another_site(self):
            raise web.HTTPError(403, "Discard sign-ups from the hub's own Authorize page.")
        await super().get(user_name)


class ApprovalSignUpHandler(SignUpHandler):
    """/hub/signup, never telling a configured administrator's name it may sign in
    now: every sign-up waits for approval here."""

    def get_result_message(self, user: Any, *args: Any) -> tuple[str, str]:
        *checks, _user_is_admin = args
        alert, message = super().get_result_message(user, *checks, False)
        return str(alert), str(message)


class LocalLoginHandler(native.LoginHandler):
    """/hub/login: nativeauthenticator's page and its "not approved yet" message, on
    JupyterHub 6's sign-in flow. nativeauthenticator 1.3's own POST times sign-ins with
    statsd, which JupyterHub 6 no longer has (every sign-in failed with a 500), and its
    page could not stand in for JupyterHub's error page (a failed form check, e.g. an
    expired XSRF cookie, was a second 500)."""

    def _render(
        self, login_error: str | None = None, username: str | None = None, **kwargs: Any
    ) -> Any:
        authenticator = self.authenticator
        next_url = self.get_argument("next", default="")
        return self.render_template(
            "native-login.html",
            **{
                **kwargs,  # JupyterHub's error page fields (and sync=True from write_error)
                "next": url_escape(next_url),
                "username": username,
                "login_error": login_error,
                "custom_html": authenticator.custom_html,
                "login_url": self.settings["login_url"],
                "enable_signup": authenticator.enable_signup,
                "two_factor_auth": authenticator.allow_2fa,
                "authenticator_login_url": url_concat(
                    authenticator.login_url(self.hub.base_url), {"next": next_url}
                ),
            },
        )

    async def post(self) -> None:
        # as JupyterHub's LoginHandler.post: the form's fields but its XSRF token, and
        # passwords as typed (they may start or end with spaces)
        data = {
            name: self.get_argument(name, strip=name == "username")
            for name in self.request.body_arguments
            if name != "_xsrf"
        }
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        username = str(data.get("username", ""))
        error = "Invalid username or password."
        info = self.authenticator.get_user(username)
        password = str(data.get("password", ""))
        # said only to whoever knows the password
        pending = info is not None and not info.is_authorized
        if pending and await run_blocking(password_matches, info.password, password):
            error = f"User {info.username} has not been approved by an administrator yet."
        self.set_status(403)
        self.finish(await self._render(login_error=error, username=username[:128]))


def _show_account_links(app: Any) -> None:
    """Put nativeauthenticator's page.html, which adds "Change Password" (and, for
    admins, "Authorize Users") to the nav bar, in front of JupyterHub's own.

    nativeauthenticator adds its templates after all others, so its page.html never
    wins over JupyterHub's and nobody sees the links. Here its folder goes just before
    JupyterHub's default templates: after the operator's and kernelhub's, which keep
    their say. JupyterHub has made its template loader (init_tornado_settings) but
    loaded no template when it asks for the handlers.
    """
    env = app.tornado_settings.get("jinja2_env")
    default_dir = app._template_paths_default()[0]
    for loader in getattr(getattr(env, "loader", None), "loaders", []):
        paths = getattr(loader, "searchpath", None)
        if isinstance(loader, FileSystemLoader) and paths and default_dir in paths:
            if native.TEMPLATE_DIR not in paths:
                paths.insert(paths.index(default_dir), native.TEMPLATE_DIR)
            return
    app.log.warning("Local sign-in: no Change Password link in the nav bar (template loader)")


class LocalPasswordAuthenticator(NativeAuthenticator):
    """Each person's own password: sign-up with approval, or accounts the operator makes."""

    credentials_file = Unicode(
        "",
        help="""The credentials file `kernelhub up` writes (local-credentials.json): the
        first account's user name and password. At start the account is created,
        approved, when it has no password yet. Empty: no first account.""",
    ).tag(config=True)

    set_first_password = Bool(
        False,
        help="""Set the first account's password from credentials_file even when the
        account has one already. `kernelhub up` sets this when it generated the
        password on this start (a new data directory, or the file was deleted).""",
    ).tag(config=True)

    # NativeAuthenticator declares these without a default_value (its .tag(default=...)
    # is documentation only), so they would be 0 and False
    @default("minimum_password_length")
    def _minimum_password_length(self) -> int:
        return MIN_PASSWORD

    @default("check_common_password")
    def _check_common_password(self) -> bool:
        return True

    @default("allowed_failed_logins")
    def _allowed_failed_logins(self) -> int:
        return 10

    @default("seconds_before_next_try")
    def _seconds_before_next_try(self) -> int:
        return 60

    @default("allow_all")
    def _approved_accounts_may_sign_in(self) -> bool:
        # authenticate() admits approved accounts only; an allow-list narrows that down
        return not self.allowed_users

    @default("db")
    def _hub_db_session(self) -> Any:
        # NativeAuthenticator keeps its table in the hub's database, through the hub's
        # session; JupyterHub warns at every start when that is reached as the default
        return self._deprecated_db_session

    def __init__(self, add_new_table: bool = True, **kwargs: Any) -> None:
        super().__init__(add_new_table=add_new_table, **kwargs)
        # JupyterHub builds the authenticator before it serves anything (init_users)
        if add_new_table and self.credentials_file:
            self.seed_first_account()

    # -- names and passwords ---------------------------------------------------
    def normalize_username(self, username: str) -> str:
        return str(super().normalize_username(normalize_user_name(username)))

    def validate_username(self, username: str) -> bool:
        return user_name_problem(username) is None and bool(super().validate_username(username))

    def is_password_strong(self, password: str) -> bool:
        return len(password.encode()) <= MAX_PASSWORD_BYTES and bool(
            super().is_password_strong(password)
        )

    def get_authed_users(self) -> set[str]:
        """Approved accounts only (NativeAuthenticator adds admin and allowed names)."""
        return {info.username for info in UserInfo.all_users(self.db) if info.is_authorized}

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> str | None:
        username = self.normalize_username(str(data.get("username", "")))
        password = str(data.get("password", ""))
        info = self.get_user(username)
        if info is None:
            return None
        if self.allowed_failed_logins and self.is_blocked(username):
            self.log.warning("Refused sign-in as %s: too many wrong passwords", username)
            return None
        # bcrypt takes a good part of a second of CPU: off the event loop (the hash is
        # read here, as the hub's database session belongs to the loop's thread)
        valid = await run_blocking(password_matches, info.password, password)
        if valid and info.has_2fa:
            valid = bool(info.is_valid_token(data.get("2fa")))
        if valid and info.is_authorized:
            self.successful_login(username)
            return username
        self.add_login_attempt(username)
        return None

    def get_handlers(self, app: Any) -> list[tuple[str, type[web.RequestHandler]]]:
        replaced: dict[type, type[web.RequestHandler]] = {
            native.LoginHandler: LocalLoginHandler,
            SignUpHandler: ApprovalSignUpHandler,
            ToggleAuthorizationHandler: SameSiteToggleAuthorizationHandler,
            DiscardHandler: SameSiteDiscardHandler,
        }
        _show_account_links(app)
        return [(route, replaced.get(h, h)) for route, h in super().get_handlers(app)]

    # -- accounts the operator makes (kernelhub user ...) ----------------------
    def checked_name(self, name: str) -> str:
        """``name`` normalized, or AccountError saying why it cannot be a user name."""
        normalized = self.normalize_username(name)
        problem = user_name_problem(normalized)
        if problem is None and not self.validate_username(normalized):
            problem = "the user name is not allowed on this hub (Authenticator.username_pattern)"
        if problem:
            raise AccountError(f"{problem}: {name!r}")
        return normalized

    def new_account_name(self, name: str) -> str:
        """``name`` normalized, if it can be a new account; else AccountError."""
        normalized = self.checked_name(name)
        info = self.get_user(normalized)
        if info is None:
            return normalized
        reset = f"`kernelhub user reset-password {normalized}`"
        if not info.is_authorized:
            # someone signed up under this name: only the operator's new password, which
            # that someone does not know, approves the account from here
            raise AccountError(
                f"user {normalized} signed up and waits for approval at /hub/authorize; "
                f"{reset} gives the account a new password and approves it",
                409,
            )
        raise AccountError(
            f"user {normalized} already has a password ({reset} gives a new one)", 409
        )

    def account_name(self, name: str) -> str:
        """``name`` normalized, if it is an account's; else AccountError."""
        normalized = self.checked_name(name)
        if self.get_user(normalized) is None:
            raise AccountError(
                f"no user {normalized} with a password (`kernelhub user add {normalized}` "
                "creates one)",
                404,
            )
        return normalized

    def create_account(self, name: str, password_hash: bytes) -> None:
        """An approved account ``name`` (from new_account_name) with a password whose
        hash_password() is ``password_hash``; committed."""
        self.new_account_name(name)  # again: a sign-up may have taken it meanwhile
        self.db.add(UserInfo(username=name, password=password_hash, is_authorized=True))
        self.db.commit()

    def reset_account_password(self, name: str, password_hash: bytes) -> None:
        """A new password (``password_hash``) for ``name``'s account, approving it;
        committed."""
        info = self.get_user(self.account_name(name))
        info.password = password_hash
        info.is_authorized = True
        self.db.commit()
        self.successful_login(name)  # forget wrong guesses at the old password

    def seed_first_account(self) -> None:
        path = Path(self.credentials_file)
        account = read_first_account(path)
        name = self.normalize_username(account.user)
        info = self.get_user(name)
        if info is None:
            self.create_account(name, hash_password(account.password))
            self.log.info("Local sign-in: created account %s (its password is in %s)", name, path)
        elif self.set_first_password:
            self.reset_account_password(name, hash_password(account.password))
            self.log.info("Local sign-in: new password for %s (in %s)", name, path)
