"""kernelhub's name and logo on the hub's pages, and which sign-in the hub uses.

kernelhub's templates (hubapp/templates) change JupyterHub's pages by extending
them. A template of ours that has the same name as the one it changes (page.html,
login.html, native-login.html) extends ``kernelhub-base/NAME``: NAME as the hub
would find it without kernelhub's folder, i.e. from the template paths after ours.
So page.html extends nativeauthenticator's page.html (its Change Password link)
where local sign-in put it in the paths, and JupyterHub's own elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader, TemplateNotFound

PRODUCT_NAME = "kernelhub"
BASE_PREFIX = "kernelhub-base/"
TEMPLATE_DIR = str(files("kernelhub.hubapp").joinpath("templates"))
LOGO_FILE = str(files("kernelhub.hubapp").joinpath("static", "kernelhub-logo.svg"))


class TemplatesBelowOurs(BaseLoader):
    """``kernelhub-base/NAME``: NAME from the template paths that come after
    kernelhub's folder. The paths are read at each load, since local sign-in inserts
    nativeauthenticator's folder after JupyterHub made its loader."""

    def __init__(self, paths: FileSystemLoader, own_dir: str = TEMPLATE_DIR) -> None:
        self.paths = paths
        self.own_dir = os.path.realpath(own_dir)

    def below(self) -> list[str]:
        searchpath = [str(p) for p in self.paths.searchpath]
        real = [os.path.realpath(p) for p in searchpath]
        start = real.index(self.own_dir) + 1 if self.own_dir in real else 0
        return searchpath[start:]

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if not template.startswith(BASE_PREFIX):
            raise TemplateNotFound(template)
        name = template.removeprefix(BASE_PREFIX)
        try:
            return FileSystemLoader(self.below()).get_source(environment, name)
        except TemplateNotFound:
            raise TemplateNotFound(template) from None


def add_base_templates(env: Environment) -> bool:
    """Make ``kernelhub-base/NAME`` loadable in JupyterHub's template environment
    (shared by its sync twin). False when the loader is not the one JupyterHub makes
    (a ChoiceLoader whose FileSystemLoader holds the template paths)."""
    loader = env.loader
    if not isinstance(loader, ChoiceLoader):
        return False
    for inner in loader.loaders:
        if isinstance(inner, FileSystemLoader):
            # the same loader object serves JupyterHub's sync environment (error pages)
            loader.loaders = [*loader.loaders, TemplatesBelowOurs(inner)]
            return True
    return False


@dataclass(frozen=True)
class SignInMethod:
    """What the sign-in page says about the hub's sign-in: "This hub uses NAME: DETAIL"."""

    kind: str  # "local", "service" (an OAuth provider), "other"
    name: str
    detail: str


def sign_in_method(authenticator: Any) -> SignInMethod:
    """The hub's sign-in, from its authenticator: an OAuth provider names itself in
    ``login_service`` ("Google"); nativeauthenticator keeps local passwords."""
    service = str(getattr(authenticator, "login_service", "") or "").strip()
    if service:
        domains = [str(d) for d in getattr(authenticator, "hosted_domain", None) or []]
        detail = f"use your {service} account"
        if domains:
            detail += f" in {_either(domains)}"
        return SignInMethod("service", f"{service} sign-in", detail)
    if _is_native(authenticator):
        detail = "your user name and the password you have on this hub"
        if getattr(authenticator, "enable_signup", False):
            if getattr(authenticator, "open_signup", False):
                detail += " (anyone may sign up for an account)"
            else:
                detail += " (new accounts wait for an administrator's approval)"
        return SignInMethod("local", "local accounts", detail)
    return SignInMethod(
        "other",
        type(authenticator).__name__,
        "the sign-in this hub's administrator configured",
    )


def _is_native(authenticator: Any) -> bool:
    try:
        from nativeauthenticator import NativeAuthenticator
    except ImportError:  # pragma: no cover - a dependency; only a stripped install lacks it
        return False
    return isinstance(authenticator, NativeAuthenticator)


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
