"""Which container a process runs in, and whose runtime that container is.

``container_id`` reads it from the process's cgroup; ``docker_labels`` asks the engine
(the socket guard's read-only view in a deployment) for the container's labels, which
``owner_from_labels`` turns into the runtime's owner.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from kernelhub.contract import (
    CPU_LIMIT_LABEL,
    GPUS_LABEL,
    RUNTIME_TYPE_LABEL,
    SERVER_LABEL,
    USER_LABEL,
)

if TYPE_CHECKING:
    from kernelhub.quotas.runtimes import Owner

# a container id: 64 hex digits, not part of a longer hex string
CONTAINER_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")

LabelLookup = Callable[[str], "dict[str, str] | None"]


def container_id(cgroup: str) -> str | None:
    """The container a process runs in, from its ``/proc/<pid>/cgroup``: the innermost
    (last) container id of its deepest cgroup path. On a nested engine (a node that is
    itself a container, Docker in Docker) or under an outer container's cgroup, the
    first id is the outer container's, which the daemon's engine does not know; on a
    hybrid cgroup host a nested engine may leave the unified line (``0::``) at the
    outer container while the v1 hierarchies' lines name the inner one."""
    deepest: list[str] = []
    for line in cgroup.splitlines():
        found = CONTAINER_ID.findall(line)
        if len(found) > len(deepest):
            deepest = found
    return deepest[-1] if deepest else None


def owner_from_labels(container: str, lookup: LabelLookup) -> Owner | None:
    labels = lookup(container)
    if not labels or USER_LABEL not in labels:
        return None  # not a kernelhub runtime (or gone)
    gpus = tuple(g for g in labels.get(GPUS_LABEL, "").split(",") if g)
    try:
        cores = float(labels.get(CPU_LIMIT_LABEL) or "nan")
    except ValueError:
        cores = math.nan
    from kernelhub.quotas.runtimes import Owner  # its home: the scanner's result

    return Owner(
        labels[USER_LABEL],
        labels.get(SERVER_LABEL, ""),
        labels.get(RUNTIME_TYPE_LABEL, ""),
        gpus,
        container,
        cores if cores > 0 else None,  # NaN (none, or not a number) is not > 0
    )


class LabelsUnavailable(Exception):
    """The engine could not be asked for a container's labels (down, restarting, its
    socket guard not listening yet): unlike "no such container", nothing to remember."""


def docker_labels(container: str) -> dict[str, str] | None:
    """A container's labels through the Docker SDK; None for a container the engine does
    not know or will not show (the socket guard's: not a runtime), or without the SDK;
    ``LabelsUnavailable`` where the engine does not answer."""
    try:
        import docker
        import docker.errors
    except ImportError:
        return None
    try:
        client = docker.from_env(timeout=5)
        try:
            return dict(client.containers.get(container).labels or {})
        finally:
            client.close()
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as e:
        if e.status_code in (401, 403):
            return None  # not a runtime: the engine (its guard) answered
        raise LabelsUnavailable(f"the engine answered {e.status_code}") from None
    except Exception as e:  # no engine yet: unreachable, refused, timed out
        raise LabelsUnavailable(type(e).__name__) from None
