"""Google sign-in: oauthenticator's GoogleOAuthenticator with clearer refusals.

Everything about Google (the OAuth flow, hosted domains, verified e-mail, Google
groups) is GoogleOAuthenticator's own code and configuration. This subclass only
changes what a refused user sees and what the log says:
- a user outside the allowed Workspace domains, or blocked, gets a 403 page that
  says so, instead of the generic "not authorized";
- Google unreachable (network down, outage) is a 503 page asking to retry, not a
  500 with an internal error;
- a stale or foreign sign-in (OAuth state mismatch) says to sign in again;
- an unverified e-mail is refused even where everyone in a domain may sign in
  (JupyterHub skips `check_allowed`, where GoogleOAuthenticator checks it, when
  `allow_all` is on).
With `hosted_domain` set and no allow-list, everyone in those domains may sign in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from oauthenticator.google import GoogleOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler
from tornado.httpclient import HTTPClientError
from tornado.web import HTTPError
from traitlets import default
from traitlets.config import Config

SIGN_IN_AGAIN = "Your sign-in could not be completed: it expired or was started in another "
GOOGLE_SECTIONS = ("GoogleOAuthenticator", "KernelhubGoogleAuthenticator")
# oauthenticator reads these when the config file leaves the traits unset
CLIENT_ID_ENV = "OAUTH_CLIENT_ID"
CLIENT_SECRET_ENV = "OAUTH_CLIENT_SECRET"
HOSTED_DOMAIN_ENV = "HOSTED_DOMAIN"  # domains separated by ";"


class GoogleSignInError(Exception):
    """Google sign-in is configured in a way that cannot work; the message says how."""


class KernelhubGoogleCallbackHandler(OAuthCallbackHandler):
    def check_state(self) -> None:
        try:
            super().check_state()
        except HTTPError as e:
            self.log.warning("Refused an OAuth callback: %s", e.log_message)
            raise HTTPError(
                400,
                SIGN_IN_AGAIN + "browser tab (%s). Please sign in again.",
                e.log_message,
            ) from None


class KernelhubGoogleAuthenticator(GoogleOAuthenticator):
    """GoogleOAuthenticator whose refusals tell the user why."""

    callback_handler = KernelhubGoogleCallbackHandler

    @default("allow_all")
    def _everyone_in_the_hosted_domains(self) -> bool:
        # a Workspace domain with no allow-list means "our whole organisation"
        return bool(self.hosted_domain) and not (self.allowed_users or self.allowed_google_groups)

    @default("custom_403_message")
    def _not_allowed_message(self) -> str:
        return (
            "Your Google account is not on this hub's list of allowed users. "
            "Ask an administrator to add you."
        )

    def check_blocked_users(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        if auth_model is None:
            return bool(super().check_blocked_users(username, auth_model))
        user_info = auth_model["auth_state"][self.user_auth_state_key]
        email = user_info.get("email", username)
        hd = user_info.get("hd", "")
        if self.hosted_domain and hd not in self.hosted_domain:
            self.log.warning(
                "Refused %s: Google Workspace domain %r is not one of %s",
                email,
                hd,
                ", ".join(self.hosted_domain),
            )
            raise HTTPError(
                403,
                "%s is not in an allowed Google Workspace domain (allowed: %s). "
                "Sign in with your organisation's account.",
                email,
                ", ".join(self.hosted_domain),
            )
        if not user_info.get("verified_email"):
            # checked here as well: with allow_all, JupyterHub skips check_allowed,
            # where GoogleOAuthenticator looks at it
            self.log.warning(
                "Refused %s: Login with unverified email %s is not allowed", email, email
            )
            raise HTTPError(403, "Login with unverified email %s is not allowed", email)
        if username in self.blocked_users:
            self.log.warning("Refused %s: blocked user %s", email, username)
            raise HTTPError(
                403, "The account %s is blocked on this hub. Contact an administrator.", email
            )
        return bool(super().check_blocked_users(username, auth_model))

    async def fetch(
        self, req: Any, label: str = "fetching", parse_json: bool = True, **kw: Any
    ) -> Any:
        try:
            return await super().fetch(req, label=label, parse_json=parse_json, **kw)
        except (HTTPClientError, OSError) as e:
            code = getattr(e, "code", None)
            if isinstance(e, HTTPClientError) and code is not None and code < 500 and code != 599:
                raise  # Google answered and refused: oauthenticator reports it
            self.log.error("Google sign-in is unreachable while %s: %s", label, _reason(e))
            raise HTTPError(
                503,
                "Google sign-in cannot be reached right now (%s). Please try again in a minute.",
                _reason(e),
            ) from None


def _reason(error: Exception) -> str:
    if isinstance(error, HTTPClientError) and error.code != 599:
        return f"it answered {error.code}"
    return "no connection" if isinstance(error, (OSError, HTTPClientError)) else str(error)


def google_settings(
    file_config: Config, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Google sign-in settings from the config file (and oauthenticator's environment
    variables): empty when no Google client is configured."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    for section in GOOGLE_SECTIONS:
        merged.update(file_config.get(section, {}))
    if "client_id" not in merged and environ.get(CLIENT_ID_ENV):
        merged["client_id"] = environ[CLIENT_ID_ENV]
    if "client_secret" not in merged and environ.get(CLIENT_SECRET_ENV):
        merged["client_secret"] = environ[CLIENT_SECRET_ENV]
    if "hosted_domain" not in merged and environ.get(HOSTED_DOMAIN_ENV):
        merged["hosted_domain"] = [d for d in environ[HOSTED_DOMAIN_ENV].lower().split(";") if d]
    if not merged.get("client_id") and not merged.get("client_secret"):
        return {}
    return merged


def check_google_settings(settings: Mapping[str, Any], file_config: Config) -> str:
    """Refuse a Google setup that cannot sign anyone in; describe a usable one."""
    if not settings.get("client_id") or not settings.get("client_secret"):
        missing = "client id" if not settings.get("client_id") else "client secret"
        raise GoogleSignInError(
            f"Google sign-in has no {missing}: set both GoogleOAuthenticator.client_id and "
            f".client_secret (or {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV})"
        )
    auth = {**file_config.get("Authenticator", {}), **settings}
    domains = settings.get("hosted_domain") or []
    if isinstance(domains, str):
        domains = [domains]
    admitted = [
        bool(domains),
        bool(auth.get("allowed_users")),
        bool(auth.get("admin_users")),
        bool(settings.get("allowed_google_groups")),
        bool(auth.get("allow_all")),
    ]
    if not any(admitted):
        raise GoogleSignInError(
            "Google sign-in would admit nobody: set GoogleOAuthenticator.hosted_domain "
            "(your Workspace domain), Authenticator.allowed_users or admin_users, or "
            "Authenticator.allow_all = True for any Google account"
        )
    who = f"accounts in {', '.join(domains)}" if domains else "the configured users"
    return f"Sign-in: Google ({who})"
