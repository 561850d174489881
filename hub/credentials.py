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
        stored = json.loads(path.read_text())
        return LocalCredentials(stored["user_password"], stored["admin_password"], False)
    creds = {
        "user_password": secrets.token_urlsafe(12),
        "admin_password": secrets.token_urlsafe(33),
    }
    write_private(path, json.dumps(creds, indent=2) + "\n")
    return LocalCredentials(creds["user_password"], creds["admin_password"], True)


def operator_token(data_dir: Path) -> str:
    """Token of the hub's `kernelhub-operator` service, used by `kernelhub token`."""
    path = data_dir / OPERATOR_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_hex(32)
    write_private(path, token + "\n")
    return token
