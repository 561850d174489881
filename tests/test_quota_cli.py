"""`kernelhub quota show|set|...` against the live quota service, and `kernelhub quota
migrate` against a quota store directly.

A few tests run the real `kernelhub` process; the rest invoke the same click
command in this process (each `kernelhub` start costs seconds of imports), still
over HTTP through the hub's proxy. Tokens travel in the environment or on the
command line; no assertion shows one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_cli import CliResult, assert_one_line_error, kernelhub

from kernelhub.cli import main
from kernelhub.contract import QUOTA_DB_ENV
from kernelhub.quotas import migrations
from kernelhub.quotas.store import QuotaStore

if TYPE_CHECKING:  # loaded by pytest as a plugin
    from quota_fixtures import QuotaService

pytest_plugins = ["quota_fixtures"]


def quota_cli(service: QuotaService, token: str, *args: str, process: bool = False) -> CliResult:
    """`kernelhub quota ARGS` with the hub URL and token in the environment."""
    env = {"KERNELHUB_URL": service.hub.url, "KERNELHUB_TOKEN": token}
    if process:
        result = kernelhub("quota", *args, env=env)
    else:
        done = CliRunner().invoke(main, ["quota", *args], env=env, catch_exceptions=False)
        result = CliResult(done.exit_code, done.stdout, done.stderr)
    assert token not in result.stdout + result.stderr, "the CLI printed the token"
    return result


def admin_cli(service: QuotaService, *args: str) -> CliResult:
    return quota_cli(service, service.admin_token, *args)


@pytest.fixture
def user_token(quota_service: QuotaService, username: str) -> str:
    return quota_service.hub.token(username)


def test_user_shows_own_quota(quota_service: QuotaService, username: str, user_token: str) -> None:
    start = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    quota_service.store.account_interval(
        f"{username}/", username, "gpu", start, start + timedelta(hours=3), 1, 1.0, 0
    )
    result = quota_cli(quota_service, user_token, "show", process=True)
    assert result.returncode == 0, result.stderr
    assert f"USER {username}" in result.stdout
    assert "GPU hours today" in result.stdout and "WINDOW" in result.stdout
    as_json = json.loads(quota_cli(quota_service, user_token, "show", "--json").stdout)
    assert as_json["usage"]["today_gpu_hours"] == pytest.approx(3)
    usage = quota_cli(quota_service, user_token, "usage", "--since", "1d")
    assert usage.returncode == 0 and "gpu" in usage.stdout and "total" in usage.stdout


def test_admin_sets_rules_and_fields_not_named_stay(
    quota_service: QuotaService, username: str, user_token: str
) -> None:
    first = admin_cli(
        quota_service, "set", username, "--gpu-hours-week", "40", "--max-session-hours", "gpu=4"
    )
    assert first.returncode == 0, first.stderr
    assert "SCOPE" in first.stdout and username in first.stdout
    second = admin_cli(
        quota_service, "set", username, "--max-gpus", "unlimited", "--max-session-hours",
        "*=8", "--json",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    rule = json.loads(second.stdout)
    assert rule["gpu_hours_week"] == 40 and rule["max_gpus"] == -1
    assert rule["max_session_hours"] == {"gpu": 4, "*": 8}
    limits = json.loads(admin_cli(quota_service, "show", username, "--json").stdout)["limits"]
    assert limits["gpu_hours_week"] == 40 and limits["max_gpus"] is None
    cleared = admin_cli(quota_service, "set", username, "--gpu-hours-week", "inherit", "--json")
    assert json.loads(cleared.stdout)["gpu_hours_week"] is None
    group = admin_cli(quota_service, "set", "--group", f"{username}-lab", "--idle-minutes", "30")
    assert group.returncode == 0 and "group" in group.stdout
    assert f"{username}-lab" in admin_cli(quota_service, "rules").stdout


def test_admin_flags_resets_and_reads_events(
    quota_service: QuotaService, username: str, user_token: str
) -> None:
    quota_service.store.record_event(
        username, "big", "gpu", "stop", "max-session-age", "stopped after 12 h"
    )
    events = admin_cli(quota_service, "events", "--user", username, "--since", "7d")
    assert events.returncode == 0, events.stderr
    assert "max-session-age" in events.stdout and "stopped after 12 h" in events.stdout
    listed = json.loads(admin_cli(quota_service, "events", "--user", username, "--json").stdout)
    assert [e["reason"] for e in listed] == ["max-session-age"]

    flagged = admin_cli(quota_service, "flag", username, "--reason", "crypto mining", "--block-gpu")
    assert flagged.returncode == 0 and "GPU blocked" in flagged.stdout
    # the user reads that they are flagged and whom to contact; the reason only admins read
    shown = quota_cli(quota_service, user_token, "show")
    assert "FLAGGED" in shown.stdout and quota_service.contact in shown.stdout
    assert "crypto mining" not in shown.stdout and "reason" not in shown.stdout
    as_user = json.loads(quota_cli(quota_service, user_token, "show", "--json").stdout)
    assert as_user["flag"]["reason"] is None and as_user["flag"]["block_gpu"] is True
    as_admin = admin_cli(quota_service, "show", username)
    assert "reason (administrators only): crypto mining" in as_admin.stdout
    assert admin_cli(quota_service, "unflag", username).returncode == 0
    assert_one_line_error(admin_cli(quota_service, "unflag", username), ["not flagged"])

    reset = admin_cli(quota_service, "reset", username, "--window", "day", "--json")
    assert reset.returncode == 0 and json.loads(reset.stdout)["window"] == "day"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["set", "--gpu-hours-week", "30"], ["exactly one of USER"]),
        (["set", "someone", "--group", "g", "--max-gpus", "1"], ["exactly one of USER"]),
        (["set", "--default"], ["at least one limit"]),
        (["set", "--default", "--gpu-hours-week", "lots"], ["--gpu-hours-week", "'lots'"]),
        (["set", "--default", "--max-gpus", "1.5"], ["whole number"]),
        (["set", "--default", "--max-session-hours", "gpu"], ["TYPE=HOURS"]),
        (["set", "--default", "--gpu-hours-day", "-3"], [">= 0"]),
        (["usage", "admin", "--since", "last-week"], ["since"]),
        (["events", "--bogus"], ["No such option"]),
        (["reset", "admin", "--window", "month"], ["--window"]),
        (["flag", "admin"], ["--reason"]),
    ],
)
def test_bad_flags_give_one_line(
    quota_service: QuotaService, args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(admin_cli(quota_service, *args), fragments)


def test_bad_flag_exit_status_of_the_real_command(quota_service: QuotaService) -> None:
    result = quota_cli(quota_service, quota_service.admin_token, "set", "--bogus", process=True)
    assert result.returncode == 2
    assert_one_line_error(result, ["No such option", "--bogus"])


@pytest.mark.parametrize(
    "args",
    [["show", "nobody-here"], ["set", "nobody-here", "--max-gpus", "1"], ["reset", "nobody-here"],
     ["flag", "nobody-here", "--reason", "x"], ["events", "--user", "nobody-here"]],
)  # fmt: skip
def test_unknown_user_gives_one_line(quota_service: QuotaService, args: list[str]) -> None:
    assert_one_line_error(admin_cli(quota_service, *args), ["no such user", "nobody-here"])


def test_users_cannot_act_as_admins(quota_service: QuotaService, user_token: str) -> None:
    assert_one_line_error(quota_cli(quota_service, user_token, "show", "admin"), ["only your own"])
    assert_one_line_error(
        quota_cli(quota_service, user_token, "set", "--default", "--max-gpus", "9"),
        ["administrators"],
    )


def test_token_problems_give_one_line(quota_service: QuotaService) -> None:
    no_token = kernelhub("quota", "show", "--url", quota_service.hub.url)
    assert_one_line_error(no_token, ["no API token", "KERNELHUB_TOKEN"])
    wrong = quota_cli(quota_service, "wrong-token", "show", process=True)
    assert_one_line_error(wrong, ["refused this API token"])
    unreachable = kernelhub("quota", "show", "--url", "http://127.0.0.1:9", "--token", "t")
    assert_one_line_error(unreachable, ["cannot reach the quota service"])


def migrate_cli(*args: str) -> CliResult:
    """`kernelhub quota migrate ARGS` in this process, the store's URL not in the environment."""
    done = CliRunner().invoke(main, ["quota", "migrate", *args], env={QUOTA_DB_ENV: None})
    return CliResult(done.exit_code, done.stdout, done.stderr)


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_migrate_creates_the_schema_the_hub_reads_and_again_changes_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'quotas.sqlite'}"
    first = kernelhub("quota", "migrate", "--db-url", url)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"quota store at revision {migrations.SCHEMA_REVISION}\n"
    created = tables(url)
    assert migrations.VERSION_TABLE in created and "quota_usage" in created
    with QuotaStore.open_read_only(url) as store:  # as the hub opens it
        assert store.rules() == []

    again = kernelhub("quota", "migrate", env={QUOTA_DB_ENV: url})

    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")
    assert tables(url) == created


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--db-url", "not a url"], ["not a database URL"]),
        (["--db-url", "mysql://quota@localhost/quotas"], ["needs SQLite or PostgreSQL"]),
        (
            ["--db-url", "sqlite:////nonexistent-kernelhub-dir/quotas.sqlite"],
            ["cannot open the quota store", "unable to open database file"],
        ),
        (
            ["--db-url", "postgresql+psycopg://quota:s3cret@127.0.0.1:9/quotas"],
            ["cannot open the quota store", "quota:***@127.0.0.1:9", "Connection refused"],
        ),
        ([], ["Missing option '--db-url'", QUOTA_DB_ENV]),
    ],
)
def test_migrate_with_a_bad_or_no_url_gives_one_line(args: list[str], fragments: list[str]) -> None:
    result = migrate_cli(*args)
    assert_one_line_error(result, fragments)
    assert "s3cret" not in result.stderr
