"""Runtime types: the named hardware choices behind Colab's "Change runtime type".

This module is pure: it parses configuration and validates user requests.
It knows nothing about tornado, JupyterHub or a particular backend, so the spawn
form, the REST API and every spawner reach the same verdict for the same input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kernelhub.contract import RUNTIME_OPTION

KNOWN_OPTIONS = frozenset({RUNTIME_OPTION})
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")
_MEMORY_PATTERN = re.compile(r"\d+(\.\d+)?[KMGT]?")

DEFAULT_RUNTIME_TYPES: list[dict[str, Any]] = [
    {
        "name": "cpu",
        "display_name": "None (CPU)",
        "description": "A CPU-only runtime. Good for data wrangling, plotting and small models.",
        "mem_limit": "4G",
        "cpu_limit": 2.0,
        "gpus": 0,
        "image": "kernelhub/runtime-cpu:latest",
    },
    {
        "name": "gpu",
        "display_name": "GPU",
        "description": "A runtime with one dedicated NVIDIA GPU for training and inference.",
        "mem_limit": "16G",
        "cpu_limit": 4.0,
        "gpus": 1,
        "image": "kernelhub/runtime-gpu:latest",
    },
]


class RuntimeTypeConfigError(ValueError):
    """The configured list of runtime types is unusable."""


class RuntimeRequestError(ValueError):
    """A user's request for a runtime cannot be honoured.

    ``status`` is the HTTP status the hub answers with; the message is shown to
    the user verbatim, so it must say what was wrong and what would be right.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class RuntimeType:
    name: str
    display_name: str
    description: str = ""
    mem_limit: str | None = None
    cpu_limit: float | None = None
    gpus: int = 0
    image: str | None = None
    allowed_groups: tuple[str, ...] = ()
    gpu_sharing: bool = False

    def to_json(self) -> dict[str, Any]:
        model = asdict(self)
        model["allowed_groups"] = list(self.allowed_groups)
        return model


@dataclass(frozen=True)
class Availability:
    """Whether one runtime type can be started right now by one user, and why not."""

    available: bool
    reason: str = ""


@dataclass
class RuntimeCatalogView:
    """Runtime types with their availability, as shown on the form and the API."""

    entries: list[tuple[RuntimeType, Availability]] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {**rt.to_json(), "available": av.available, "reason": av.reason}
            for rt, av in self.entries
        ]


def parse_runtime_types(raw: Iterable[Mapping[str, Any]]) -> list[RuntimeType]:
    """Turn configuration entries into RuntimeTypes, naming the entry and field at fault."""
    allowed_fields = set(RuntimeType.__dataclass_fields__)
    parsed: list[RuntimeType] = []
    seen: set[str] = set()
    for position, entry in enumerate(raw, start=1):
        where = f"runtime type #{position}"
        if not isinstance(entry, Mapping):
            raise RuntimeTypeConfigError(f"{where} must be a dict, not {type(entry).__name__}")
        unknown = set(entry) - allowed_fields
        if unknown:
            raise RuntimeTypeConfigError(
                f"{where} has unknown field(s) {', '.join(sorted(unknown))}; "
                f"valid fields: {', '.join(sorted(allowed_fields))}"
            )
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise RuntimeTypeConfigError(
                f"{where} needs a 'name' of lowercase letters, digits and '-', got {name!r}"
            )
        where = f"runtime type {name!r}"
        if name in seen:
            raise RuntimeTypeConfigError(f"{where} is defined twice")
        seen.add(name)
        parsed.append(_parse_one(where, entry))
    if not parsed:
        raise RuntimeTypeConfigError("at least one runtime type must be configured")
    return parsed


def _parse_one(where: str, entry: Mapping[str, Any]) -> RuntimeType:
    display_name = entry.get("display_name", entry["name"])
    description = entry.get("description", "")
    for key, value in (("display_name", display_name), ("description", description)):
        if not isinstance(value, str):
            raise RuntimeTypeConfigError(f"{where}: {key} must be a string")
    mem_limit = entry.get("mem_limit")
    if mem_limit is not None and (
        not isinstance(mem_limit, str | int) or not _MEMORY_PATTERN.fullmatch(str(mem_limit))
    ):
        raise RuntimeTypeConfigError(
            f"{where}: mem_limit must look like '512M' or '4G', got {mem_limit!r}"
        )
    cpu_limit = entry.get("cpu_limit")
    if cpu_limit is not None and (
        isinstance(cpu_limit, bool)
        or not isinstance(cpu_limit, int | float)
        or not math.isfinite(cpu_limit)
        or cpu_limit <= 0
    ):
        raise RuntimeTypeConfigError(f"{where}: cpu_limit must be a positive number")
    gpus = entry.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise RuntimeTypeConfigError(f"{where}: gpus must be a whole number >= 0, got {gpus!r}")
    image = entry.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise RuntimeTypeConfigError(f"{where}: image must be a non-empty string")
    groups = entry.get("allowed_groups", ())
    if not isinstance(groups, list | tuple) or not all(isinstance(g, str) for g in groups):
        raise RuntimeTypeConfigError(f"{where}: allowed_groups must be a list of group names")
    sharing = entry.get("gpu_sharing", False)
    if not isinstance(sharing, bool):
        raise RuntimeTypeConfigError(f"{where}: gpu_sharing must be true or false")
    return RuntimeType(
        name=entry["name"],
        display_name=display_name,
        description=description,
        mem_limit=str(mem_limit) if mem_limit is not None else None,
        cpu_limit=float(cpu_limit) if cpu_limit is not None else None,
        gpus=gpus,
        image=image,
        allowed_groups=tuple(groups),
        gpu_sharing=sharing,
    )


def requested_runtime_name(user_options: Any, default: str, valid_names: list[str]) -> str:
    """Validate the shape of ``user_options`` and return the runtime type it names.

    Raises RuntimeRequestError whose message names the valid choices.
    """
    choices = ", ".join(valid_names)
    if user_options is None:
        return default
    if not isinstance(user_options, Mapping):
        raise RuntimeRequestError(
            f'user_options must be a JSON object like {{"runtime": "{default}"}}; '
            f"valid runtime types: {choices}"
        )
    unknown = sorted(str(key) for key in set(user_options) - KNOWN_OPTIONS)
    if unknown:
        raise RuntimeRequestError(
            f"unknown user option(s): {', '.join(unknown)}; "
            f"the only option is 'runtime', one of: {choices}"
        )
    name = user_options.get(RUNTIME_OPTION, default)
    if not isinstance(name, str):
        raise RuntimeRequestError(
            f"'runtime' must be a string, one of: {choices}; got {type(name).__name__}"
        )
    if name not in valid_names:
        raise RuntimeRequestError(f"unknown runtime type {name!r}; valid runtime types: {choices}")
    return name


def group_permission(runtime_type: RuntimeType, user_groups: Iterable[str]) -> Availability:
    if not runtime_type.allowed_groups:
        return Availability(True)
    if set(runtime_type.allowed_groups) & set(user_groups):
        return Availability(True)
    return Availability(
        False, f"only for members of group(s): {', '.join(runtime_type.allowed_groups)}"
    )
