"""The quota daemon's database: usage accounting, rules, events and flags.

SQLite by default; PostgreSQL in the compose deployment, where it shares the hub's
database, hence the ``quota_`` table prefix (and a version table of its own, see
``migrations``). Its owner, kernelhub-quotad, opens it with ``QuotaStore.open``, which
migrates to the head revision (as does `kernelhub quota migrate`); the hub opens it
with ``QuotaStore.open_read_only``, which never migrates and never writes.

The store is synchronous and thread-safe: every call opens its own session, so
callers run it on the shared executor. Rows come back detached (safe to hand to
another thread). Datetimes are timezone-aware in and out; days are UTC dates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic.util.exc import CommandError
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column

from kernelhub.quotas import migrations
from kernelhub.quotas.engine import MIGRATE_HINT, QuotaStoreError, connect, unreachable
from kernelhub.quotas.policy import LIMIT_FIELDS, SCOPES, Rule, Scope, utc


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC, returned aware: SQLite keeps no zone, so neither side does."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(MappedAsDataclass, DeclarativeBase):
    # dataclasses: rows read well in logs and tests; explicit constraint names, so
    # later migrations (SQLite batch mode too) can find them
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Usage(Base):
    """One user's usage of one runtime type on one UTC day."""

    __tablename__ = "quota_usage"
    __table_args__ = (sa.UniqueConstraint("username", "runtime_type", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    username: Mapped[str] = mapped_column(sa.String(255))
    runtime_type: Mapped[str] = mapped_column(sa.String(64))
    day: Mapped[date]
    gpu_seconds: Mapped[float] = mapped_column(sa.Double)  # GPUs x seconds held
    gpu_seconds_weighted: Mapped[float] = mapped_column(sa.Double)  # ... x utilization
    cpu_seconds: Mapped[float] = mapped_column(sa.Double)


class RuleRow(Base):
    """A ``policy.Rule`` as stored; NULL inherits, -1 (``UNLIMITED``) lifts the limit."""

    __tablename__ = "quota_rules"
    __table_args__ = (
        sa.UniqueConstraint("scope", "subject"),
        sa.CheckConstraint("scope IN ('default', 'group', 'user')", name="scope"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    scope: Mapped[str] = mapped_column(sa.String(16))
    subject: Mapped[str] = mapped_column(sa.String(255))
    gpu_hours_day: Mapped[float | None] = mapped_column(sa.Double)
    gpu_hours_week: Mapped[float | None] = mapped_column(sa.Double)
    max_session_hours: Mapped[dict[str, float] | None] = mapped_column(sa.JSON)
    idle_minutes: Mapped[float | None] = mapped_column(sa.Double)
    max_concurrent: Mapped[int | None]
    max_gpus: Mapped[int | None]


class Event(Base):
    """Something the daemon did or told a user: a warning, a stop, a flag."""

    __tablename__ = "quota_events"
    __table_args__ = (
        sa.Index(None, "username", "time"),
        sa.Index(None, "time"),
        sa.CheckConstraint("kind IN ('warn', 'stop', 'flag')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    username: Mapped[str] = mapped_column(sa.String(255))
    server: Mapped[str] = mapped_column(sa.String(255))
    runtime_type: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.String(64))  # "idle", "max-session-age", ...
    message: Mapped[str] = mapped_column(sa.Text)  # as the user was told
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


class Flag(Base):
    """A user an administrator (or the daemon) marked; ``block_gpu`` refuses GPU spawns."""

    __tablename__ = "quota_flags"

    username: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    flagged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(sa.Text)
    block_gpu: Mapped[bool]


class Cursor(Base):
    """How far one runtime (``user/server``) has been accounted: the idempotence key."""

    __tablename__ = "quota_cursors"

    runtime_key: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    last_accounted_time: Mapped[datetime] = mapped_column(UTCDateTime)


class RuleSet(NamedTuple):
    """The rules that apply to one user, in ``policy.effective_limits`` argument order."""

    default: Rule | None
    groups: list[Rule]
    user: Rule | None


class QuotaStore:
    def __init__(self, engine: Engine, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self._sessions = orm.sessionmaker(engine, expire_on_commit=False)
        # SQLite: writers take the write lock up front (BEGIN IMMEDIATE), so a second
        # writer waits for it rather than failing to upgrade a read lock mid-way
        writer = engine.execution_options(kernelhub_write=True)
        self._write_sessions = orm.sessionmaker(writer, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> QuotaStore:
        """Connect and migrate to the head revision (a no-op when already there): for the
        store's owner, kernelhub-quotad, and `kernelhub quota migrate`."""
        engine = connect(url, read_only=False)
        try:
            with engine.execution_options(kernelhub_write=True).begin() as connection:
                migrations.upgrade(connection)
        except BaseException as e:
            engine.dispose()
            if isinstance(e, CommandError):
                raise QuotaStoreError(
                    f"the quota database has a schema revision this kernelhub does not know "
                    f"(it expects {migrations.SCHEMA_REVISION}; written by a newer one?): {e}"
                ) from None
            if isinstance(e, sa.exc.DBAPIError):
                raise unreachable(engine.url, e) from None
            raise
        return cls(engine)

    @classmethod
    def open_read_only(cls, url: str) -> QuotaStore:
        """Connect without migrating; every write is refused: the hub's view of the store.

        QuotaStoreError when there is nothing to read the way this kernelhub reads it:
        no SQLite file, no schema yet, or a schema revision other than
        ``migrations.SCHEMA_REVISION``. Nothing is created, not even the SQLite file.
        """
        engine = connect(url, read_only=True)
        try:
            with engine.connect() as connection:
                revision = migrations.current(connection)
        except BaseException as e:
            engine.dispose()
            if isinstance(e, sa.exc.DBAPIError):
                raise unreachable(engine.url, e) from None
            raise
        if revision != migrations.SCHEMA_REVISION:
            engine.dispose()
            found = "has no schema yet" if revision is None else f"is at revision {revision}"
            raise QuotaStoreError(
                f"the quota store {found}, this kernelhub reads revision "
                f"{migrations.SCHEMA_REVISION}: {MIGRATE_HINT}"
            )
        return cls(engine, read_only=True)

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self.engine.connect() as connection:
            return migrations.current(connection)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> QuotaStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[orm.Session]:
        if self.read_only:  # the database refuses too; this says why, before trying
            raise QuotaStoreError("this quota store is open read-only; kernelhub-quotad writes it")
        with self._write_sessions() as session, session.begin():
            yield session

    def _insert(self, entity: type[Base] | sa.Table) -> postgresql.Insert | sqlite.Insert:
        # both speak INSERT ... ON CONFLICT: an upsert is one atomic statement
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)

    def account_interval(
        self,
        runtime_key: str,
        user: str,
        runtime_type: str,
        start: datetime,
        end: datetime,
        gpus: int,
        util_fraction: float,
        cpu_seconds: float,
    ) -> float:
        """Add the usage of [start, end) not yet accounted for this runtime; seconds added.

        Usage and the runtime's cursor change in one transaction: accounting an
        interval again (after a crash, a restart, a retry) adds nothing twice, and
        a process killed mid-way loses only the interval it was writing.
        ``util_fraction`` is the GPUs' mean utilization (0..1) over the interval;
        ``cpu_seconds`` covers all of [start, end) and is prorated to what is new.
        Intervals crossing UTC midnight are split between the days.
        """
        interval = (runtime_key, user, runtime_type, start, end, gpus, util_fraction, cpu_seconds)
        return self.account_intervals([interval])[0]

    def account_intervals(self, intervals: Sequence[tuple[Any, ...]]) -> list[float]:
        """``account_interval`` for many (its arguments per tuple), in ONE transaction:
        seconds added per interval, as the same calls one by one in order would add."""
        from kernelhub.quotas.accounting import Interval, account  # it reads our tables

        batch = [Interval(*i) for i in intervals]
        tables = Base.metadata.tables
        with self._write() as session:
            cursors, usage = tables[Cursor.__tablename__], tables[Usage.__tablename__]
            return account(session, self._insert, cursors, usage, batch)

    def cursor(self, runtime_key: str) -> datetime | None:
        """How far ``runtime_key`` has been accounted, if at all."""
        with self._sessions() as session:
            row = session.get(Cursor, runtime_key)
            return None if row is None else row.last_accounted_time

    def usage(self, user: str, since: date) -> list[Usage]:
        """``user``'s usage per day and runtime type, from ``since`` on, oldest first."""
        with self._sessions() as session:
            query = sa.select(Usage).where(Usage.username == user, Usage.day >= since)
            return list(session.scalars(query.order_by(Usage.day, Usage.runtime_type)))

    def reset_usage(self, user: str, since: date) -> float:
        """Forget ``user``'s usage from the UTC day ``since`` on (an admin's "start
        afresh"); the GPU-seconds forgotten.

        Runtime cursors stay: intervals already accounted are not counted again, so
        a reset cannot be undone by re-accounting.
        """
        where = (Usage.username == user, Usage.day >= since)
        total = sa.select(sa.func.coalesce(sa.func.sum(Usage.gpu_seconds), 0.0)).where(*where)
        with self._write() as session:
            forgotten = float(session.scalar(total) or 0.0)
            delete = sa.delete(Usage).where(*where)
            session.execute(delete.execution_options(synchronize_session=False))
        return forgotten

    def set_rule(self, rule: Rule) -> None:
        """Create or replace the rule of ``rule.scope``/``rule.subject``, every field."""
        values = {name: getattr(rule, name) for name in LIMIT_FIELDS}
        if rule.max_session_hours is not None:
            values["max_session_hours"] = dict(rule.max_session_hours)
        with self._write() as session:
            row = self._insert(RuleRow).values(scope=rule.scope, subject=rule.subject, **values)
            upsert = row.on_conflict_do_update(index_elements=["scope", "subject"], set_=values)
            session.execute(upsert)

    def delete_rule(self, scope: Scope, subject: str = "") -> bool:
        """Remove a rule; whether there was one."""
        query = sa.delete(RuleRow).where(RuleRow.scope == scope, RuleRow.subject == subject)
        with self._write() as session:
            return bool(session.execute(query).rowcount)  # type: ignore[attr-defined]

    def rules(self) -> list[Rule]:
        """Every rule: the default first, then groups, then users, by name."""
        with self._sessions() as session:
            rules = [_rule(row) for row in session.scalars(sa.select(RuleRow))]
        return sorted(rules, key=lambda r: (SCOPES.index(r.scope), r.subject))

    def rules_for(self, user: str, groups: list[str]) -> RuleSet:
        """The rules that apply to ``user``, a member of ``groups``."""
        applies = (
            (RuleRow.scope == "default")
            | ((RuleRow.scope == "group") & RuleRow.subject.in_(groups))
            | ((RuleRow.scope == "user") & (RuleRow.subject == user))
        )
        with self._sessions() as session:
            rules = [_rule(row) for row in session.scalars(sa.select(RuleRow).where(applies))]
        by_scope = {r.scope: r for r in rules}  # one default and one user rule at most
        group_rules = sorted((r for r in rules if r.scope == "group"), key=lambda r: r.subject)
        return RuleSet(by_scope.get("default"), group_rules, by_scope.get("user"))

    def record_event(
        self,
        user: str,
        server: str,
        runtime_type: str,
        kind: str,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        time: datetime | None = None,
    ) -> Event:
        """Store an event (``kind``: "warn", "stop" or "flag"); ``time`` defaults to now."""
        at = utc(time) if time else datetime.now(UTC)
        event = Event(at, user, server, runtime_type, kind, reason, message, dict(details or {}))
        with self._write() as session:
            session.add(event)
        return event

    def events(self, user: str | None = None, since: datetime | None = None) -> list[Event]:
        """Events, oldest first; only ``user``'s and from ``since`` on when given."""
        query = sa.select(Event).order_by(Event.time, Event.id)
        if user is not None:
            query = query.where(Event.username == user)
        if since is not None:
            query = query.where(Event.time >= utc(since))
        with self._sessions() as session:
            return list(session.scalars(query))

    def flag(
        self, user: str, reason: str, block_gpu: bool = False, at: datetime | None = None
    ) -> Flag:
        """Flag ``user``, replacing an earlier flag; ``at`` defaults to now."""
        flag = Flag(user, utc(at or datetime.now(UTC)), reason, block_gpu)
        values = {"flagged_at": flag.flagged_at, "reason": reason, "block_gpu": block_gpu}
        with self._write() as session:
            row = self._insert(Flag).values(username=user, **values)
            session.execute(row.on_conflict_do_update(index_elements=["username"], set_=values))
        return flag

    def unflag(self, user: str) -> bool:
        """Lift ``user``'s flag; whether there was one."""
        with self._write() as session:
            result = session.execute(sa.delete(Flag).where(Flag.username == user))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def flag_of(self, user: str) -> Flag | None:
        with self._sessions() as session:
            return session.get(Flag, user)


def _rule(row: RuleRow) -> Rule:
    limits = {name: getattr(row, name) for name in LIMIT_FIELDS}
    return Rule(scope=row.scope, subject=row.subject, **limits)  # type: ignore[arg-type]
