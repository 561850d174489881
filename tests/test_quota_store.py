"""The quota store on real databases: SQLite files and a real PostgreSQL server.

Every test runs on both backends; PostgreSQL tests get a database of their own.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kernelhub.quotas import migrations
from kernelhub.quotas.policy import UNLIMITED, Rule, effective_limits, midnight
from kernelhub.quotas.store import Base, QuotaStore, QuotaStoreError
from kernelhub.quotas.usage import read_usage

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
QUOTA_TABLES = {"quota_usage", "quota_rules", "quota_events", "quota_flags", "quota_cursors"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database: a fresh SQLite file, or a fresh database on the real server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('quotas')}/quotas.sqlite"
        return
    server = sa.create_engine(request.getfixturevalue("postgres_url"), isolation_level="AUTOCOMMIT")
    name = f"quotas_{secrets.token_hex(4)}"
    with server.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        server.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[QuotaStore]:
    with QuotaStore.open(db_url) as store:
        yield store


def revision_and_tables(url: str) -> tuple[str | None, set[str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return migrations.current(connection), set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_open_migrates_an_empty_database_to_head_and_reopening_changes_nothing(
    db_url: str,
) -> None:
    assert revision_and_tables(db_url) == (None, set())
    assert migrations.head() == migrations.SCHEMA_REVISION

    with QuotaStore.open(db_url) as store:
        store.account_interval("ann/", "ann", "gpu", at(0), at(60), 1, 1.0, 30.0)
    revision, tables = revision_and_tables(db_url)
    assert revision == migrations.SCHEMA_REVISION
    assert tables == QUOTA_TABLES | {migrations.VERSION_TABLE}

    with QuotaStore.open(db_url) as store:
        assert [u.gpu_seconds for u in store.usage("ann", T0.date())] == [60.0]
    assert revision_and_tables(db_url) == (revision, tables)


def test_the_models_are_what_the_migrations_create(store: QuotaStore) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": migrations.VERSION_TABLE}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_a_database_shared_with_jupyterhub_keeps_the_hubs_alembic_version(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('4621fec11365')")
    QuotaStore.open(db_url).close()
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert rows == [("4621fec11365",)]
        assert migrations.current(connection) == migrations.SCHEMA_REVISION
    engine.dispose()


def test_processes_opening_a_fresh_database_at_once_all_succeed(db_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            QuotaStore.open(db_url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert revision_and_tables(db_url)[0] == migrations.SCHEMA_REVISION


def test_a_newer_schema_is_refused_with_an_explanation(db_url: str) -> None:
    QuotaStore.open(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(QuotaStoreError, match="expects 0001; written by a newer one"):
        QuotaStore.open(db_url)


def test_unsupported_databases_are_refused() -> None:
    with pytest.raises(QuotaStoreError, match="needs SQLite or PostgreSQL, not mysql"):
        QuotaStore.open("mysql://quota@localhost/quotas")


def test_reading_read_only_never_migrates_and_never_writes(db_url: str) -> None:
    """The hub's view: an unmigrated database stays as it is, a migrated one reads."""
    assert revision_and_tables(db_url) == (None, set())  # SQLite: an empty file now
    with pytest.raises(QuotaStoreError, match=r"has no schema yet.*kernelhub quota migrate"):
        QuotaStore.open_read_only(db_url)
    assert revision_and_tables(db_url) == (None, set())

    with QuotaStore.open(db_url) as owner:
        owner.account_interval("ann/", "ann", "gpu", at(0), at(60), 1, 1.0, 0.0)
    with QuotaStore.open_read_only(db_url) as reader:
        assert [u.gpu_seconds for u in reader.usage("ann", T0.date())] == [60.0]
        with pytest.raises(QuotaStoreError, match="read-only"):
            reader.set_rule(Rule(gpu_hours_week=1))
        # and should a write get past the store, the database refuses it
        with pytest.raises(sa.exc.DBAPIError), reader.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM quota_usage")
        assert [u.gpu_seconds for u in reader.usage("ann", T0.date())] == [60.0]


def test_reading_read_only_refuses_another_schema_revision(db_url: str) -> None:
    QuotaStore.open(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0000'")
    engine.dispose()
    expected = "is at revision 0000, this kernelhub reads revision 0001"
    with pytest.raises(QuotaStoreError, match=expected):
        QuotaStore.open_read_only(db_url)


def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "quotas.sqlite"
    with pytest.raises(QuotaStoreError, match=re.escape(f"no quota store at {missing}")):
        QuotaStore.open_read_only(f"sqlite:///{missing}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "not a database URL"),
        ("sqlite:////nonexistent-kernelhub-dir/quotas.sqlite", "unable to open database file"),
        ("postgresql+psycopg://quota:s3cret@127.0.0.1:9/quotas", "quota:***@127.0.0.1:9"),
    ],
)
def test_unusable_urls_are_one_line_errors_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(QuotaStoreError) as refused:
        QuotaStore.open(url)
    message = str(refused.value)
    assert fragment in message and "\n" not in message and "s3cret" not in message


def test_reaccounting_after_a_crash_never_counts_twice(db_url: str) -> None:
    with QuotaStore.open(db_url) as store:
        assert store.account_interval("ann/", "ann", "gpu", at(0), at(5), 1, 0.5, 1.0) == 5
    # restarted: the daemon accounts [0, 10) again, from the runtime's start
    with QuotaStore.open(db_url) as store:
        assert store.account_interval("ann/", "ann", "gpu", at(0), at(10), 1, 0.5, 2.0) == 5
        assert store.account_interval("ann/", "ann", "gpu", at(0), at(10), 1, 0.5, 2.0) == 0
        [usage] = store.usage("ann", T0.date())
        assert (usage.gpu_seconds, usage.gpu_seconds_weighted, usage.cpu_seconds) == (10, 5, 2)
        assert store.cursor("ann/") == at(10)
        assert store.cursor("ann/other") is None


def test_kill_9_mid_accounting_loses_nothing_once_reaccounted(db_url: str) -> None:
    """A real process accounting minute after minute (across midnight) is SIGKILLed."""
    start = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    command = [sys.executable, "-c", KILLED_DAEMON, db_url, start.isoformat()]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        confirmed = [int(child.stdout.readline()) for _ in range(40)]
        os.kill(child.pid, signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL

    with QuotaStore.open(db_url) as store:
        cursor = store.cursor("bob/train")
        assert cursor is not None and cursor >= start + timedelta(minutes=confirmed[-1] + 1)
        accounted = (cursor - start).total_seconds()
        # usage and cursor moved together: nothing half-written survives the kill
        assert sum(u.gpu_seconds for u in store.usage("bob", start.date())) == 2 * accounted
        # the restarted daemon accounts every interval it knows of again
        minutes = int(accounted // 60) + 5
        for minute in range(minutes):
            begin = start + timedelta(minutes=minute)
            store.account_interval(
                "bob/train", "bob", "gpu", begin, begin + timedelta(minutes=1), 2, 1.0, 60
            )
        by_day = {u.day: u.gpu_seconds for u in store.usage("bob", start.date())}
    assert by_day[start.date()] == 2 * 1800  # 23:30 to midnight, 2 GPUs
    assert sum(by_day.values()) == 2 * 60 * minutes


KILLED_DAEMON = """
import sys
from datetime import datetime, timedelta
from kernelhub.quotas.store import QuotaStore

store = QuotaStore.open(sys.argv[1])
start = datetime.fromisoformat(sys.argv[2])
minute = 0
while True:
    begin = start + timedelta(minutes=minute)
    end = begin + timedelta(minutes=1)
    store.account_interval("bob/train", "bob", "gpu", begin, end, 2, 1.0, 60)
    print(minute, flush=True)
    minute += 1
"""


def test_threads_accounting_runtimes_of_one_user_at_once_add_up(store: QuotaStore) -> None:
    def account(runtime: int) -> None:
        for second in range(25):
            store.account_interval(
                f"cat/r{runtime}", "cat", "gpu", at(second), at(second + 1), 1, 1.0, 1.0
            )

    threads = [threading.Thread(target=account, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [usage] = store.usage("cat", T0.date())
    assert (usage.gpu_seconds, usage.cpu_seconds) == (200, 200)


def test_intervals_crossing_midnight_are_split_between_the_days(store: QuotaStore) -> None:
    before = datetime(2026, 11, 26, 23, 59, 50, tzinfo=UTC)
    store.account_interval("dan/", "dan", "gpu", before, before + timedelta(seconds=20), 2, 0.5, 8)
    # a CPU runtime over two midnights, its start given in another zone
    noon_cet = datetime(2026, 11, 25, 13, tzinfo=timezone(timedelta(hours=1)))
    end = datetime(2026, 11, 27, 12, tzinfo=UTC)
    store.account_interval("dan/cpu", "dan", "cpu", noon_cet, end, 0, 0.0, 48 * 3600)
    rows = [
        (u.day.isoformat(), u.runtime_type, u.gpu_seconds, u.gpu_seconds_weighted, u.cpu_seconds)
        for u in store.usage("dan", date(2026, 11, 1))
    ]
    assert rows == [
        ("2026-11-25", "cpu", 0, 0, 12 * 3600),
        ("2026-11-26", "cpu", 0, 0, 24 * 3600),
        ("2026-11-26", "gpu", 20, 10, 4),
        ("2026-11-27", "cpu", 0, 0, 12 * 3600),
        ("2026-11-27", "gpu", 20, 10, 4),
    ]
    usage = read_usage(store, "dan", [], midnight(date(2026, 11, 27)) + timedelta(hours=12))
    assert (usage.day_gpu_seconds, usage.week_gpu_seconds) == (20, 40)


def test_reset_forgets_usage_from_a_day_on_and_re_accounting_does_not_bring_it_back(
    store: QuotaStore,
) -> None:
    for day in range(3):  # an hour a day, on three days
        begin = T0 + timedelta(days=day)
        store.account_interval("mo/", "mo", "gpu", begin, begin + timedelta(hours=1), 1, 1.0, 0)

    assert store.reset_usage("mo", (T0 + timedelta(days=1)).date()) == 2 * 3600

    assert [u.day for u in store.usage("mo", T0.date())] == [T0.date()]
    begin = T0 + timedelta(days=2)  # the daemon accounts the last interval again
    store.account_interval("mo/", "mo", "gpu", begin, begin + timedelta(hours=1), 1, 1.0, 0)
    assert [u.day for u in store.usage("mo", T0.date())] == [T0.date()]
    assert store.reset_usage("mo", T0.date()) == 3600
    assert store.reset_usage("mo", T0.date()) == 0


def test_naive_datetimes_are_refused(store: QuotaStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.account_interval("eve/", "eve", "gpu", datetime(2026, 1, 1), T0, 1, 1.0, 0)


def test_rules_precedence_user_over_groups_over_default(store: QuotaStore) -> None:
    store.set_rule(Rule(gpu_hours_week=20, idle_minutes=60))
    store.set_rule(Rule("group", "students", gpu_hours_week=10, max_session_hours={"gpu": 4}))
    store.set_rule(Rule("group", "lab", gpu_hours_week=40, max_concurrent=3))
    store.set_rule(Rule("user", "fay", gpu_hours_week=UNLIMITED, max_gpus=2))
    store.set_rule(Rule("user", "gus", max_gpus=1))
    store.set_rule(Rule("user", "gus", max_gpus=4))  # replaces, does not add

    fay = effective_limits(*store.rules_for("fay", ["students", "lab", "unknown"]))
    assert (fay.gpu_hours_week, fay.idle_minutes, fay.max_concurrent, fay.max_gpus) == (
        None,
        60,
        3,
        2,
    )
    assert (fay.session_hours("gpu"), fay.session_hours("cpu")) == (4, 12)
    student = effective_limits(*store.rules_for("hal", ["students"]))
    assert (student.gpu_hours_week, student.max_gpus) == (10, None)
    nobody = effective_limits(*store.rules_for("ida", []))
    assert (nobody.gpu_hours_week, nobody.idle_minutes) == (20, 60)

    rules = store.rules_for("gus", ["lab"])
    assert rules.default == Rule(gpu_hours_week=20, idle_minutes=60)
    assert [r.subject for r in rules.groups] == ["lab"]
    assert rules.user == Rule("user", "gus", max_gpus=4)
    assert [(r.scope, r.subject) for r in store.rules()] == [
        ("default", ""),
        ("group", "lab"),
        ("group", "students"),
        ("user", "fay"),
        ("user", "gus"),
    ]
    assert store.delete_rule("user", "gus") is True
    assert store.delete_rule("user", "gus") is False
    assert store.rules_for("gus", []).user is None


def test_events_round_trip(store: QuotaStore) -> None:
    store.record_event("jo", "", "gpu", "warn", "idle", "idle soon", {"idle_seconds": 4800}, at(0))
    store.record_event("kim", "big", "cpu", "stop", "max-session-age", "stopped", None, at(10))
    stop = store.record_event(
        "jo", "", "gpu", "stop", "idle", "your runtime was stopped", {"gpu_util": 0.01}, at(20)
    )
    assert stop.id is not None

    [first, last] = store.events(user="jo")
    assert (first.time, first.kind, first.details) == (at(0), "warn", {"idle_seconds": 4800})
    assert (last.time, last.reason, last.message) == (at(20), "idle", "your runtime was stopped")
    assert last.time.tzinfo is UTC
    assert [e.username for e in store.events()] == ["jo", "kim", "jo"]
    assert [e.username for e in store.events(since=at(10))] == ["kim", "jo"]
    assert store.events(user="kim", since=at(11)) == []


def test_flags_round_trip(store: QuotaStore) -> None:
    assert store.flag_of("lee") is None
    store.flag("lee", "shared their token", at=at(0))
    flag = store.flag_of("lee")
    assert flag is not None
    assert (flag.flagged_at, flag.reason, flag.block_gpu) == (at(0), "shared their token", False)
    store.flag("lee", "mining on GPUs", block_gpu=True, at=at(5))
    flag = store.flag_of("lee")
    assert flag is not None and (flag.reason, flag.block_gpu) == ("mining on GPUs", True)
    assert store.unflag("lee") is True
    assert store.unflag("lee") is False
    assert store.flag_of("lee") is None
