"""The configured runtime types joined with live state: who may start what, now."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from traitlets import Integer, List, TraitError, Unicode, default, observe, validate
from traitlets.config import SingletonConfigurable

from kernelhub.quotas.policy import runtime_limit_refusal

from .gpus import GpuInventory
from .types import (
    DEFAULT_RUNTIME_TYPES,
    Availability,
    RuntimeCatalogView,
    RuntimeRequestError,
    RuntimeType,
    RuntimeTypeConfigError,
    group_permission,
    parse_runtime_types,
    requested_runtime_name,
)


def user_group_names(user: Any) -> list[str]:
    """Group names of a JupyterHub user (services have none)."""
    return [group.name for group in getattr(user, "groups", None) or []]


@dataclass(frozen=True)
class UserLoad:
    """What a user's other runtimes take up: what the limits on "at once" judge."""

    runtimes: int  # running, starting, or admitted and on their way to start
    gpus: int  # GPUs those hold, or will take as they start


@dataclass
class _Admission:
    runtime_type: RuntimeType
    in_request: bool = True  # the REST request that admitted it is still being answered


class Admissions:
    """Spawns admitted but not yet holding their GPUs, and one admission lock per user.

    The limits on what one user holds at once (runtimes, GPUs) are judged by a
    quota check that awaits the store, and GPUs are taken after it. Two spawns of
    one user checked side by side would both pass on the same count, so each
    admission of a user (count, check, then take the GPUs or record the admission)
    runs under that user's lock. The REST API admits a request before JupyterHub
    even creates its server; the admission recorded here stands in for that spawn
    until its spawner has taken its GPUs, so the next check counts it. The hub is
    one process with one event loop: an ``asyncio.Lock`` per user is enough.
    """

    def __init__(self) -> None:
        # weak: a user's lock lives while someone holds or waits for it, no longer
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._admitted: dict[str, dict[str, _Admission]] = {}

    def lock(self, user_name: str) -> asyncio.Lock:
        """Hold it from counting a user's load until the spawn is recorded or refused."""
        lock = self._locks.get(user_name)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user_name] = lock
        return lock

    def add(self, user_name: str, server_name: str, runtime_type: RuntimeType) -> None:
        """Record a spawn the REST API admitted: it counts from now on."""
        self._admitted.setdefault(user_name, {})[server_name] = _Admission(runtime_type)

    def in_flight(self, user: Any, server_name: str) -> bool:
        return server_name in self.counted(user)

    def end_request(self, user: Any, server_name: str) -> None:
        """The admitting request is answered; a spawn it started carries the admission on."""
        admission = self._admitted.get(user.name, {}).get(server_name)
        if admission is not None:
            admission.in_request = False
            self.counted(user)  # forget it at once if no spawn went ahead

    def settle(self, user_name: str, server_name: str) -> None:
        """The spawn holds its GPUs now, or was refused: from here it counts as itself."""
        admitted = self._admitted.get(user_name, {})
        admitted.pop(server_name, None)
        if not admitted:
            self._admitted.pop(user_name, None)

    def counted(self, user: Any) -> dict[str, RuntimeType]:
        """Server name -> runtime type of ``user``'s admissions that still count."""
        admitted = self._admitted.get(user.name, {})
        for name, admission in list(admitted.items()):
            # a spawn that failed before its spawner took over leaves nothing to count
            spawner = user.spawners.get(name)  # dict.get: creates no spawner
            if not admission.in_request and not (spawner is not None and spawner.active):
                self.settle(user.name, name)
        return {name: admission.runtime_type for name, admission in admitted.items()}


class RuntimeCatalog(SingletonConfigurable):
    """Runtime types offered on the "Change runtime type" form and the REST API."""

    runtime_types: List[Any] = List(
        help="""The runtime types users choose from, in display order. Each is a dict:
        name (required; lowercase, used in user_options {"runtime": name}),
        display_name, description, mem_limit ("4G"), cpu_limit (cores),
        gpus (count), image (Docker backend), allowed_groups (empty: everyone),
        gpu_sharing (may runtimes of this type share a GPU; default false).""",
    ).tag(config=True)

    default_runtime = Unicode(
        help="Runtime type used when a request names none. Default: the first type.",
    ).tag(config=True)

    max_running_runtimes_per_user = Integer(
        2,
        help="""How many runtimes (default and named servers together) one user may
        run at once, e.g. a CPU and a GPU runtime side by side. 0 means no cap.""",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.admissions = Admissions()

    @default("runtime_types")
    def _default_runtime_types(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in DEFAULT_RUNTIME_TYPES]

    @validate("runtime_types")
    def _check_runtime_types(self, proposal: Any) -> list[dict[str, Any]]:
        try:
            parse_runtime_types(proposal.value)
        except RuntimeTypeConfigError as e:
            raise TraitError(f"RuntimeCatalog.runtime_types: {e}") from e
        return list(proposal.value)

    @default("default_runtime")
    def _first_type(self) -> str:
        return str(self.runtime_types[0]["name"])

    @validate("default_runtime")
    def _check_default(self, proposal: Any) -> str:
        names = [t["name"] for t in self.runtime_types]
        if proposal.value not in names:
            raise TraitError(
                f"RuntimeCatalog.default_runtime {proposal.value!r} is not a runtime type; "
                f"choose one of: {', '.join(names)}"
            )
        return str(proposal.value)

    @validate("max_running_runtimes_per_user")
    def _check_cap(self, proposal: Any) -> int:
        if proposal.value < 0:
            raise TraitError("RuntimeCatalog.max_running_runtimes_per_user must be >= 0")
        return int(proposal.value)

    # images the runtime backend lacks (kept current by the app); types using one
    # are shown disabled rather than failing at spawn
    missing_images: frozenset[str] = frozenset()

    _parsed_types: list[RuntimeType] | None = None

    @observe("runtime_types")
    def _forget_parsed_types(self, change: Any) -> None:
        self._parsed_types = None

    @property
    def types(self) -> list[RuntimeType]:
        # parsed once per configuration, not on every form render and spawn
        if self._parsed_types is None:
            self._parsed_types = parse_runtime_types(self.runtime_types)
        return self._parsed_types

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.types]

    def get(self, name: str) -> RuntimeType:
        for runtime_type in self.types:
            if runtime_type.name == name:
                return runtime_type
        raise KeyError(name)

    @property
    def gpus(self) -> GpuInventory:
        return GpuInventory.instance()

    def availability(self, runtime_type: RuntimeType, user_groups: Iterable[str]) -> Availability:
        permitted = group_permission(runtime_type, user_groups)
        if not permitted.available:
            return permitted
        if runtime_type.image in self.missing_images:
            return Availability(
                False, f"its image {runtime_type.image} is not built on this host yet"
            )
        reason = self.gpus.unavailable_reason(runtime_type.gpus, runtime_type.gpu_sharing)
        return Availability(not reason, reason)

    def view(self, user_groups: Iterable[str]) -> RuntimeCatalogView:
        groups = list(user_groups)
        return RuntimeCatalogView([(t, self.availability(t, groups)) for t in self.types])

    def load_of(self, user: Any, server_name: str) -> UserLoad:
        """What ``user``'s runtimes other than ``server_name`` take up right now.

        Running and starting servers count, and so do spawns admitted but not yet
        started; each counts the GPUs it holds or, until it takes them, the GPUs it
        was admitted with. Call it under ``admissions.lock(user.name)``.
        """
        admitted = self.admissions.counted(user)
        active = {name: spawner for name, spawner in user.spawners.items() if spawner.active}
        others = (active.keys() | admitted.keys()) - {server_name}
        gpus = 0
        for name in others:
            held = len(getattr(active.get(name), "gpu_ids", None) or [])
            gpus += max(held, admitted[name].gpus if name in admitted else 0)
        return UserLoad(len(others), gpus)

    def admit_for(self, user: Any, server_name: str, user_options: Any) -> RuntimeType:
        """``admit`` for a JupyterHub user starting ``server_name``."""
        return self.admit(
            user_options, user_group_names(user), self.load_of(user, server_name).runtimes
        )

    def admit(
        self, user_options: Any, user_groups: Iterable[str], other_running: int
    ) -> RuntimeType:
        """The runtime type a request may start, or RuntimeRequestError saying why not.

        This is the single validation behind the form, the REST API and the spawner.
        """
        name = requested_runtime_name(user_options, self.default_runtime, self.names)
        runtime_type = self.get(name)
        availability = self.availability(runtime_type, user_groups)
        if not availability.available:
            available = [t.name for t in self.types if self.availability(t, user_groups).available]
            raise RuntimeRequestError(
                f"runtime type {name!r} is unavailable: {availability.reason}; "
                f"available now: {', '.join(available) or 'none'}"
            )
        cap = self.max_running_runtimes_per_user
        if cap and other_running >= cap:
            # the same refusal (403, same message) as a quota rule's max_concurrent
            refusal = runtime_limit_refusal(other_running, cap)
            raise RuntimeRequestError(refusal.message, refusal.status)
        return runtime_type
