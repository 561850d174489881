"""Alembic environment: runs on the connection ``migrations.config`` carries."""

from __future__ import annotations

from alembic import context

from kernelhub.quotas.migrations import VERSION_TABLE
from kernelhub.quotas.store import Base

connection = context.config.attributes.get("connection")
if connection is None:
    # there is no URL to fall back on: the store decides which database and when
    raise RuntimeError("quota migrations run on a connection: see kernelhub.quotas.migrations")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # autogenerate: SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
