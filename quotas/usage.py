"""One user's quota usage, read by one function for everyone who shows or enforces it.

The hub's spawn check (``kernelhub.quotagate.gate``), its home page notices
(``kernelhub.quotagate.notices``) and the quota API's summary (``api_model.summary``,
what `kernelhub quota show` prints) all read through ``read_usage``: a spawn refused
for GPU hours or for a GPU block, the home page and the API cannot disagree about
what was used, the limits or the flag (of which users read only what
``disclosure.disclose`` shows them). It only reads, so the hub's read-only store
serves, and it imports nothing of the daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from kernelhub.quotas.disclosure import DEFAULT_CONTACT, disclose
from kernelhub.quotas.policy import Limits, Refusal, check_spawn, effective_limits, utc, week_start
from kernelhub.quotas.store import Flag, QuotaStore, RuleSet, Usage

USAGE_KEYS = ("gpu_hours", "gpu_hours_weighted", "cpu_hours")


@dataclass(frozen=True)
class UsageSummary:
    """A user's rules and limits, usage of the rolling week and flag, as read at ``now``."""

    user: str
    now: datetime  # aware
    rules: RuleSet
    limits: Limits
    rows: Sequence[Usage]  # per UTC day and runtime type, from week_since on
    flag: Flag | None

    @property
    def week_since(self) -> date:
        return week_start(self.now)

    @property
    def gpu_seconds_by_day(self) -> dict[date, float]:
        """GPU-seconds of all runtime types per UTC day (days with usage only)."""
        by_day: dict[date, float] = {}
        for row in self.rows:
            by_day[row.day] = by_day.get(row.day, 0.0) + row.gpu_seconds
        return by_day

    @property
    def day_gpu_seconds(self) -> float:
        return self.gpu_seconds_by_day.get(utc(self.now).date(), 0.0)

    @property
    def week_gpu_seconds(self) -> float:
        return sum(self.gpu_seconds_by_day.values())

    @property
    def gpu_blocked(self) -> bool:
        """Whether a flag blocks the user's GPU runtimes."""
        return self.flag is not None and self.flag.block_gpu

    def by_runtime_type(self) -> dict[str, dict[str, float]]:
        """The week's hours (``USAGE_KEYS``) per runtime type, as the rows round them."""
        by_type: dict[str, dict[str, float]] = {}
        for row in self.rows:
            sums = by_type.setdefault(row.runtime_type, dict.fromkeys(USAGE_KEYS, 0.0))
            for key, value in usage_json(row).items():
                if key in sums:
                    sums[key] = round(sums[key] + value, 4)
        return by_type

    def spawn_refusal(
        self,
        running_count: int,
        requested_gpus: int,
        gpus_in_use: int = 0,
        contact: str = DEFAULT_CONTACT,
    ) -> Refusal | None:
        """``policy.check_spawn`` on this usage: why a spawn may not start, if it may not.

        A GPU block is refused with what its user may read of the flag (``disclose``):
        since when and whom to contact, never the flag's reason.
        """
        blocked = None
        if self.flag is not None and self.flag.block_gpu:
            blocked = disclose(self.flag, admin=False, contact=contact)["message"]
        return check_spawn(
            self.limits,
            self.day_gpu_seconds,
            sorted(self.gpu_seconds_by_day.items()),
            running_count,
            requested_gpus,
            self.now,
            gpus_in_use=gpus_in_use,
            gpu_blocked=blocked,
        )


def read_usage(store: QuotaStore, user: str, groups: list[str], now: datetime) -> UsageSummary:
    """``user``'s (a member of ``groups``) quota usage at ``now`` (aware)."""
    rules = store.rules_for(user, groups)
    rows = store.usage(user, week_start(now))
    return UsageSummary(user, now, rules, effective_limits(*rules), rows, store.flag_of(user))


def usage_json(row: Usage) -> dict[str, Any]:
    return {
        "day": row.day.isoformat(),
        "runtime_type": row.runtime_type,
        "gpu_hours": round(row.gpu_seconds / 3600, 4),
        "gpu_hours_weighted": round(row.gpu_seconds_weighted / 3600, 4),
        "cpu_hours": round(row.cpu_seconds / 3600, 4),
    }
