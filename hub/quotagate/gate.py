"""The quota check every spawn passes before it starts (form and REST alike).

kernelhub-quotad accounts usage into its store; the hub reads the same store here
and refuses, with 403 and a message saying what was used, the limit and when it
resets, a spawn the user's quota does not cover. A GPU spawn of a user whose flag
blocks GPUs is refused with what the user may read of the flag (since when, whom to
contact: ``kernelhub.quotas.disclosure``), never the flag's reason, which holds the
mining detector's explanation. Nothing is created before the check, so a refusal
leaves no container and no pending server.

The hub only reads that store: it never migrates it and never writes to it (the
daemon, or `kernelhub quota migrate`, does). A spawn waits up to
``first_read_wait`` seconds for a store the hub has never read (a deployment may start
the daemon after the hub); otherwise, while the store cannot be read (not created or
migrated yet, unreachable), spawns are refused with 503 and the hub log says why in
one line; the store is tried again at the next spawn.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from traitlets import Float, TraitError, Unicode, default, validate
from traitlets.config import SingletonConfigurable

from kernelhub.contract import QUOTA_CONTACT_ENV, QUOTA_DB_ENV
from kernelhub.executor import run_blocking
from kernelhub.runtimes.types import RuntimeRequestError, RuntimeType

if TYPE_CHECKING:
    from kernelhub.quotas.policy import Refusal
    from kernelhub.quotas.store import QuotaStore

# no quota check, no spawn: quotas must not switch themselves off with the store; the
# message (and 503) tells the user it is not their quota and that trying again helps
STORE_UNAVAILABLE = (
    "quota checks are unavailable right now (the quota store cannot be read); "
    "try again in a minute, or ask an administrator"
)


class QuotaGate(SingletonConfigurable):
    """Refuses spawns over the user's quota (rules and usage from the quota store)."""

    db_url = Unicode(
        help="""URL of the quota store kernelhub-quotad writes (SQLite or PostgreSQL).
        `kernelhub up` sets it to the daemon's store; empty turns spawn checks off.""",
    ).tag(config=True)

    first_read_wait = Float(
        30.0,
        help="""Seconds a spawn waits for a quota store the hub has never read yet (the
        quota daemon creates and migrates it as it starts, which may be after the hub)
        before it is refused with 503. Once the store has been read, an unreadable store
        refuses spawns at once.""",
    ).tag(config=True)

    contact = Unicode(
        help=f"""Whom a user whose GPU runtimes a flag blocks is told to contact, in the
        spawn refusal (the quota API says the same; the flag's reason stays with
        administrators). Default: ${QUOTA_CONTACT_ENV}, else "an administrator of this
        hub".""",
    ).tag(config=True)

    @default("contact")
    def _contact_from_environment(self) -> str:
        from kernelhub.quotas.disclosure import default_contact

        return default_contact()

    @validate("contact")
    def _someone(self, proposal: Any) -> str:
        contact = str(proposal.value).strip()
        if not contact:
            raise TraitError("QuotaGate.contact must name someone, e.g. 'the GPU team'")
        return contact

    @validate("first_read_wait")
    def _non_negative_wait(self, proposal: Any) -> float:
        if proposal.value < 0:
            raise TraitError("QuotaGate.first_read_wait must be >= 0 seconds")
        return float(proposal.value)

    @default("db_url")
    def _db_url_from_environment(self) -> str:
        return os.environ.get(QUOTA_DB_ENV, "")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store: QuotaStore | None = None
        self._opening = threading.Lock()  # spawns run on a thread pool
        self._problem = ""  # why the store could not be read last time; "" when it could

    async def check(
        self,
        user_name: str,
        groups: list[str],
        runtime_type: RuntimeType,
        running_count: int,
        gpus_in_use: int,
    ) -> None:
        """Raise RuntimeRequestError (403) when the quota does not cover this spawn,
        (503) while the quota store cannot be read."""
        if not self.db_url:
            return
        loop = asyncio.get_running_loop()
        # until the store has been read once, it may just not exist yet: the daemon
        # creates it as it starts, which in a deployment can be after the hub
        deadline = loop.time() + (self.first_read_wait if self._store is None else 0)
        while True:
            refusal = await run_blocking(
                self._refusal, user_name, groups, runtime_type.gpus, running_count, gpus_in_use
            )
            if refusal is None or refusal.status != 503 or loop.time() >= deadline:
                break
            await asyncio.sleep(1)
        if refusal is not None:
            raise RuntimeRequestError(refusal.message, refusal.status)

    def _refusal(
        self, user: str, groups: list[str], gpus: int, running: int, gpus_in_use: int
    ) -> Refusal | None:
        from sqlalchemy.exc import SQLAlchemyError

        from kernelhub.quotas.policy import Refusal
        from kernelhub.quotas.store import QuotaStoreError
        from kernelhub.quotas.usage import read_usage

        try:
            usage = read_usage(self.store(), user, groups, datetime.now(UTC))
        except (QuotaStoreError, SQLAlchemyError) as e:
            self._store_unreadable(e)
            return Refusal("quota-store-unavailable", STORE_UNAVAILABLE, {}, status=503)
        if self._problem:
            self._problem = ""
            self.log.info("Quota checks available again: the quota store can be read")
        return usage.spawn_refusal(running, gpus, gpus_in_use, contact=self.contact)

    def _store_unreadable(self, error: Exception) -> None:
        problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if problem != self._problem:  # once per cause, not once per spawn
            self._problem = problem
            self.log.warning("Quota checks unavailable, spawns refused: %s", problem)

    def store(self) -> QuotaStore:
        """The quota daemon's store, read-only: opened on first use, then shared.

        QuotaStoreError while it cannot be opened; the next call tries again, since
        kernelhub-quotad may not have created or migrated it yet.
        """
        with self._opening:
            if self._store is None:
                from kernelhub.quotas.store import QuotaStore

                self._store = QuotaStore.open_read_only(self.db_url)
            return self._store


async def check_quota(user: Any, server_name: str, runtime_type: RuntimeType) -> None:
    """QuotaGate.check for a JupyterHub user about to start ``server_name``.

    Callers hold ``RuntimeCatalog.admissions.lock(user.name)`` until the spawn is
    recorded (REST API) or holds its GPUs (spawner): the load counted here includes
    spawns admitted but not started yet, so two spawns cannot pass on one count.
    """
    from kernelhub.runtimes.catalog import RuntimeCatalog, user_group_names

    load = RuntimeCatalog.instance().load_of(user, server_name)
    await QuotaGate.instance().check(
        user.name, user_group_names(user), runtime_type, load.runtimes, load.gpus
    )
