"""Password hashes for local sign-in (bcrypt), and the errors of account requests.

Apart from kernelhub.signin.local so that the hub's REST handlers use them without
importing nativeauthenticator, whose table joins the hub's ORM when imported.
"""

from __future__ import annotations

import bcrypt

from kernelhub.launcher.credentials import MAX_PASSWORD_BYTES


class AccountError(Exception):
    """A request about a local account that cannot be done; ``message`` says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def hash_password(password: str) -> bytes:
    """The bcrypt hash (with its random salt) that the hub stores for ``password``."""
    return bytes(bcrypt.hashpw(password.encode(), bcrypt.gensalt()))


def password_matches(stored: bytes | None, password: str) -> bool:
    """Whether ``password`` hashes to ``stored``; bcrypt compares in constant time."""
    encoded = password.encode()
    if not stored or len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bool(bcrypt.checkpw(encoded, bytes(stored)))
    except ValueError:  # a stored value that is no bcrypt hash
        return False
