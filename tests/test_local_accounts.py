"""Each hub user's local runtimes run under a Unix account of its own, named safely and
never confused with another user's or a system account."""

from __future__ import annotations

import grp
import pwd
import re
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from kernelhub.spawner.accounts import (
    AccountError,
    Accounts,
    account_comment,
    account_name,
)

UNIX_NAME = re.compile(r"[a-z][-a-z0-9_]{0,31}")


@pytest.mark.parametrize(
    "hub_name",
    [
        "alice",
        "alice.smith@example.com",
        "ALICE",
        "ab",
        "a.b",
        "Ünïcødé-ñame",
        "名前",
        "x" * 200,
        "-leading-dash",
        "root",
    ],
)
def test_an_account_name_is_a_short_valid_unix_name_of_its_own(hub_name: str) -> None:
    name = account_name(hub_name)
    assert UNIX_NAME.fullmatch(name) and len(name) <= 32
    assert name.startswith("kh-")
    assert name != "root"


def test_different_hub_names_never_share_an_account_even_when_their_letters_agree() -> None:
    names = ["ab", "a.b", "a-b", "a_b", "AB", "a b", "ab " * 1]
    assert len({account_name(n) for n in names}) == len(set(names))


@pytest.fixture
def hub_user() -> Iterator[str]:
    """A fresh hub user name; its account (if made) is removed afterwards."""
    name = f"acct-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["userdel", account_name(name)], capture_output=True, check=False)


async def test_the_first_spawn_makes_a_locked_account_with_no_other_groups(hub_user: str) -> None:
    accounts = Accounts()
    made = await accounts.ensure(hub_user)
    entry = pwd.getpwnam(made.name)
    assert made.uid == entry.pw_uid >= 1000
    assert entry.pw_gecos == account_comment(hub_user)
    assert [g.gr_name for g in grp.getgrall() if made.name in g.gr_mem] == []
    shadow = subprocess.run(["passwd", "--status", made.name], capture_output=True, text=True)
    assert shadow.stdout.split()[1] == "L"  # locked: nobody signs in to it
    assert await accounts.ensure(hub_user) == made  # found, not made again


def test_an_existing_account_that_is_not_this_users_is_refused(hub_user: str) -> None:
    # someone (or another program) already has the name: it is never borrowed
    subprocess.run(
        ["useradd", "--no-create-home", "--comment", "not kernelhub", account_name(hub_user)],
        check=True,
    )
    with pytest.raises(AccountError, match="not kernelhub's account for this user"):
        Accounts().find(hub_user)


@pytest.mark.parametrize("prefix", ["", "Kh-", "1kh", "kh_", "k" * 11, "kh/"])
def test_a_bad_account_prefix_is_one_clear_error(prefix: str) -> None:
    with pytest.raises(AccountError, match="account prefix"):
        Accounts(prefix)
