"""The quota store's Alembic migrations, configured in code: no alembic.ini.

The scripts ship inside the package and run on a connection the store hands
over (``config(connection)``), in the transaction the store holds. A new revision,
from a checkout, against a database at the current head::

    from alembic import command
    from kernelhub.quotas import migrations
    with engine.begin() as connection:
        command.revision(
            migrations.config(connection), "what changes", autogenerate=True, rev_id="0002"
        )

then set ``SCHEMA_REVISION`` to the new revision.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

SCHEMA_REVISION = "0001"  # the head this code expects; the test checks the scripts agree
# JupyterHub's own Alembic owns `alembic_version` in a shared database (compose) and
# refuses to start on a revision it does not know, so ours has a table of its own
VERSION_TABLE = "quota_alembic_version"
SCRIPTS = Path(__file__).parent
_LOCK_KEY = 0x6B68_7175_6F74_6173  # PostgreSQL advisory lock: "khquotas"


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    # module names must not start with a digit (mypy checks the scripts as modules)
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The newest revision among the shipped scripts."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(connection: Connection) -> None:
    """Migrate to head inside the caller's transaction; a no-op when already there.

    Raises alembic's CommandError for a revision the scripts do not know.
    """
    if connection.dialect.name == "postgresql":
        # two processes opening a fresh database must not both create the tables:
        # the second waits here, then finds the head and does nothing
        connection.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
    command.upgrade(config(connection), "head")
