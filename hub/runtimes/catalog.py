"""The configured runtime types joined with live state: who may start what, now."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from traitlets import Integer, List, TraitError, Unicode, default, observe, validate
from traitlets.config import SingletonConfigurable

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


def other_running_count(user: Any, server_name: str) -> int:
    """Active (running or pending) runtimes of ``user`` other than ``server_name``."""
    return sum(
        1 for name, spawner in user.spawners.items() if name != server_name and spawner.active
    )


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

    def admit_for(self, user: Any, server_name: str, user_options: Any) -> RuntimeType:
        """``admit`` for a JupyterHub user starting ``server_name``."""
        return self.admit(
            user_options, user_group_names(user), other_running_count(user, server_name)
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
            raise RuntimeRequestError(
                f"you already run {other_running} runtime(s), the most allowed at once is {cap}; "
                "stop one before starting another"
            )
        return runtime_type
