"""What a local account's user name may be: shared by the authenticator (sign-up, sign-in,
`kernelhub user add`) and `kernelhub up --single-user`, without the authenticator's
imports (bcrypt, the hub's ORM)."""

from __future__ import annotations

# nativeauthenticator keeps names in users_info.username, a VARCHAR(128): PostgreSQL
# refuses longer ones with an error, so they are refused here first, with a reason
MAX_NAME_LENGTH = 128
# nativeauthenticator's own rule: its pages put names in URL paths and its sign-up
# form splits nothing, but "," and "/" were never allowed there
FORBIDDEN_CHARACTERS = ",/"


def user_name_problem(name: str) -> str | None:
    """Why ``name`` (already normalized) cannot be a local user name; None if it can."""
    if not name:
        return "the user name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the user name is longer than {MAX_NAME_LENGTH} characters"
    if any(c.isspace() or not c.isprintable() for c in name):
        return "the user name has spaces or control characters"
    bad = sorted({c for c in name if c in FORBIDDEN_CHARACTERS})
    if bad:
        return f"the user name has {' and '.join(repr(c) for c in bad)} in it"
    if set(name) == {"."}:
        return "the user name is only dots"
    return None


def normalize_user_name(name: str) -> str:
    """JupyterHub's default normalization (Authenticator.normalize_username): lower case."""
    return name.lower()
