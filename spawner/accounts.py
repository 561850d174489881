"""One Unix account per hub user, for local runtimes when the hub runs as root.

Hub user names are free text (e-mail addresses, capitals, non-ASCII); Unix names are
short and restricted. The account is ``PREFIX + up to 12 letters/digits of the name +
"-" + 10 hex digits of the name's SHA-256``: readable in ``ps``, unique per hub name,
and at most 32 characters. The account's comment (GECOS) holds 32 hex digits of the
same hash, so an existing account that is not kernelhub's for this very user (a
collision, or a system account that happens to have the name) is refused, never used.

Accounts are made with ``useradd`` (shadow-utils): locked password, no home created
(the runtime's HOME is its drive), its own group, no supplementary groups.
"""

from __future__ import annotations

import asyncio
import hashlib
import pwd
import re
import shutil
from dataclasses import dataclass

ACCOUNT_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,9}")
MIN_ACCOUNT_UID = 1000  # never a system account, never root


class AccountError(RuntimeError):
    """The user's account cannot be made or used; the message says why."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def account_name(hub_user: str, prefix: str = "kh-") -> str:
    stem = re.sub(r"[^a-z0-9]", "", hub_user.lower())[:12]
    digest = hashlib.sha256(hub_user.encode()).hexdigest()[:10]
    return f"{prefix}{stem}-{digest}" if stem else f"{prefix}{digest}"


def account_comment(hub_user: str) -> str:
    return "kernelhub " + hashlib.sha256(hub_user.encode()).hexdigest()[:32]


class Accounts:
    """Finds or makes hub users' accounts, one ``useradd`` at a time."""

    def __init__(self, prefix: str = "kh-") -> None:
        if not ACCOUNT_PREFIX_PATTERN.fullmatch(prefix):
            raise AccountError(
                f"account prefix {prefix!r} must be a lowercase letter, then up to 9 "
                "lowercase letters, digits or '-'"
            )
        self.prefix = prefix
        self._lock = asyncio.Lock()

    def find(self, hub_user: str) -> Account | None:
        """The user's existing account; None if there is none; AccountError if the name
        is taken by an account that is not this user's."""
        name = account_name(hub_user, self.prefix)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        if entry.pw_gecos != account_comment(hub_user) or entry.pw_uid < MIN_ACCOUNT_UID:
            raise AccountError(
                f"the Unix account {name} exists but is not kernelhub's account for this "
                "user; refusing to run the runtime under it (remove or rename it)"
            )
        return Account(name, entry.pw_uid, entry.pw_gid)

    async def ensure(self, hub_user: str) -> Account:
        async with self._lock:
            found = self.find(hub_user)
            if found is not None:
                return found
            useradd = shutil.which("useradd")
            if useradd is None:
                raise AccountError("useradd is not installed (apt-get install passwd)")
            name = account_name(hub_user, self.prefix)
            process = await asyncio.create_subprocess_exec(
                useradd,
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/bash",
                "--user-group",
                "--no-log-init",
                "--comment",
                account_comment(hub_user),
                name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            if process.returncode != 0:
                why = err.decode(errors="replace").strip() or f"exit {process.returncode}"
                raise AccountError(f"cannot create the Unix account {name}: {why}")
            created = self.find(hub_user)
            if created is None:
                raise AccountError(f"useradd made no account {name}")
            return created
