"""The quota check every spawn passes before it starts (form and REST alike).

kernelhub-quotad accounts usage into its store; the hub reads the same store here
and refuses, with 403 and a message saying what was used, the limit and when it
resets, a spawn the user's quota does not cover. Nothing is created before the
check, so a refusal leaves no container and no pending server.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from traitlets import Unicode, default
from traitlets.config import SingletonConfigurable

from kernelhub.contract import QUOTA_DB_ENV
from kernelhub.executor import run_blocking
from kernelhub.runtimes.types import RuntimeRequestError, RuntimeType


class QuotaGate(SingletonConfigurable):
    """Refuses spawns over the user's quota (rules and usage from the quota store)."""

    db_url = Unicode(
        help="""URL of the quota store kernelhub-quotad writes (SQLite or PostgreSQL).
        `kernelhub up` sets it to the daemon's store; empty turns spawn checks off.""",
    ).tag(config=True)

    @default("db_url")
    def _db_url_from_environment(self) -> str:
        return os.environ.get(QUOTA_DB_ENV, "")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store: Any = None

    async def check(
        self,
        user_name: str,
        groups: list[str],
        runtime_type: RuntimeType,
        running_count: int,
        gpus_in_use: int,
    ) -> None:
        """Raise RuntimeRequestError (403) when the quota does not cover this spawn."""
        if not self.db_url:
            return
        refusal = await run_blocking(
            self._refusal, user_name, groups, runtime_type.gpus, running_count, gpus_in_use
        )
        if refusal is not None:
            raise RuntimeRequestError(refusal.message, refusal.status)

    def _refusal(
        self, user: str, groups: list[str], gpus: int, running: int, gpus_in_use: int
    ) -> Any:
        from kernelhub.quotas.policy import check_spawn, effective_limits, midnight, week_start

        store = self.store()
        now = datetime.now(UTC)
        rules = store.rules_for(user, groups)
        flag = store.flag_of(user)
        return check_spawn(
            effective_limits(rules.default, rules.groups, rules.user),
            store.gpu_seconds(user, midnight(now.date()), midnight(now.date() + timedelta(1))),
            store.gpu_seconds_by_day(user, week_start(now)),
            running,
            gpus,
            now,
            gpus_in_use=gpus_in_use,
            gpu_blocked=flag.reason if flag is not None and flag.block_gpu else None,
        )

    def store(self) -> Any:
        """The quota store (opened on first use, then shared): the daemon's records."""
        if self._store is None:
            from kernelhub.quotas.store import QuotaStore

            self._store = QuotaStore.open(self.db_url)
        return self._store


async def check_quota(user: Any, server_name: str, runtime_type: RuntimeType) -> None:
    """QuotaGate.check for a JupyterHub user about to start ``server_name``."""
    from kernelhub.runtimes.catalog import user_group_names

    others = [s for name, s in user.spawners.items() if name != server_name and s.active]
    gpus_in_use = sum(len(getattr(s, "gpu_ids", []) or []) for s in others)
    await QuotaGate.instance().check(
        user.name, user_group_names(user), runtime_type, len(others), gpus_in_use
    )
