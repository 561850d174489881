"""Secrets kept in the data directory: local sign-in passwords and the operator token.

Each lives in its own file readable by the hub's OS user alone (mode 0600).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

CREDENTIALS_FILE = "local-credentials.json"
OPERATOR_TOKEN_FILE = "operator-token"


@dataclass(frozen=True)
class LocalCredentials:
    user_password: str
    admin_password: str
    created_now: bool


def write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` with mode 0600 from the first byte on."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def local_credentials(data_dir: Path) -> LocalCredentials:
    """The shared passwords for local sign-in, generated on first use."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        return _read_credentials(path)
    creds = {
        "user_password": secrets.token_urlsafe(12),
        "admin_password": secrets.token_urlsafe(33),
    }
    write_private(path, json.dumps(creds, indent=2) + "\n")
    return LocalCredentials(creds["user_password"], creds["admin_password"], True)


class CredentialsError(ValueError):
    """The stored local credentials are unusable; the message says how to fix them."""


# JupyterHub's SharedPasswordAuthenticator refuses shorter passwords
MIN_USER_PASSWORD = 8
MIN_ADMIN_PASSWORD = 32


def _read_credentials(path: Path) -> LocalCredentials:
    fix = f"fix {path} or delete it to generate new passwords"
    try:
        stored = json.loads(path.read_text())
        user, admin = stored["user_password"], stored["admin_password"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CredentialsError(f"cannot use {path} ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(user, str) or len(user) < MIN_USER_PASSWORD:
        raise CredentialsError(f"user_password must be {MIN_USER_PASSWORD}+ characters; {fix}")
    if not isinstance(admin, str) or len(admin) < MIN_ADMIN_PASSWORD or admin == user:
        raise CredentialsError(
            f"admin_password must be {MIN_ADMIN_PASSWORD}+ characters and differ from "
            f"user_password; {fix}"
        )
    return LocalCredentials(user, admin, False)


def operator_token(data_dir: Path) -> str:
    """Token of the hub's `kernelhub-operator` service, used by `kernelhub token`."""
    path = data_dir / OPERATOR_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_hex(32)
    write_private(path, token + "\n")
    return token
