"""Which Docker API requests the guard lets through: pure decisions, no I/O.

A request is first matched against ROUTES (method, decoded path, query parameters),
which name the calls the runtime spawner and the hub make and nothing else; the
proxy then looks up what a decision needs from the engine (a container's labels, an
image's labels) and asks the checks here again. Anything not matched is refused:
exec, attach, archive, update, commit, build, pulls, events, the swarm's own settings
(init, join, update), service updates, plugins, secrets, configs.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from kernelhub.contract import IMAGE_KIND_LABEL, RUNTIME_TYPE_LABEL, SERVER_LABEL, USER_LABEL

from .decode import Refused

# the oldest API version allowed in a path: older ones still honour legacy bodies
# (a HostConfig sent to /start, for one) that the checks here do not look at
MIN_API_MINOR = 24
TEMPLATE_FIELDS = {"username", "safe_username", "raw_username", "prefix"}


def _default_drive_template() -> tuple[str, str]:
    # the spawner's own defaults, so the two cannot drift apart
    from kernelhub.spawner.docker_runtime import DockerRuntimeSpawner

    traits = DockerRuntimeSpawner.class_traits()
    return (
        str(traits["drive_name_template"].default_value),
        str(traits["site_snippets_volume"].default_value),
    )


def _runtime_image_kinds() -> tuple[str, ...]:
    from kernelhub.imagetools.build import IMAGE_NAMES

    return tuple(IMAGE_NAMES)


@dataclass(frozen=True)
class GuardConfig:
    """What the operator decides (the CLI's options)."""

    networks: tuple[str, ...] = ("kernelhub-runtimes",)
    images: tuple[str, ...] = ()  # allowed besides images labelled as runtime images
    image_kinds: tuple[str, ...] = field(default_factory=_runtime_image_kinds)
    drive_name_template: str = field(default_factory=lambda: _default_drive_template()[0])
    site_snippets_volume: str = field(default_factory=lambda: _default_drive_template()[1])
    # DockerRuntimeSpawner's prefix: runtime names start with "PREFIX-" (DNS names on
    # the runtimes network), and drive templates may use it
    prefix: str = "kernelhub"
    require_lockdown: bool = True  # CapDrop ALL, no-new-privileges and a PidsLimit
    max_pids: int = 4096
    max_body: int = 1024 * 1024
    # the quota daemon's address: reads runtimes' labels and state, changes nothing, and
    # never sees a runtime's environment (it holds that runtime's hub token)
    read_only: bool = False
    # Swarm (SwarmRuntimeSpawner): its image_registry (host:port) that service images
    # are named in, and its drive_root, under which a user's drive folder may be bound
    image_registry: str = ""
    drive_root: str = ""

    def __post_init__(self) -> None:
        used = {name for _, name, _, _ in string.Formatter().parse(self.drive_name_template)}
        unknown = {n for n in used if n is not None} - TEMPLATE_FIELDS
        if unknown:
            # a volume create carries only the drive's owner: nothing else can be checked
            raise ValueError(
                f"the drive name template may use {sorted(TEMPLATE_FIELDS)} only, "
                f"not {sorted(unknown)}"
            )
        if self.drive_root and (
            not self.drive_root.startswith("/")
            or self.drive_root != os.path.normpath(self.drive_root)
        ):
            raise ValueError("the drive root must be a normalised absolute path")
        registry = r"[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*"  # a repository may follow
        if self.image_registry and (
            not re.fullmatch(registry, self.image_registry)
            or any(part in (".", "..") for part in self.image_registry.split("/"))
        ):
            raise ValueError("the image registry is HOST[:PORT][/PATH]")
        if self.max_pids < 1:
            raise ValueError("the largest PidsLimit must be at least 1")


def drive_name(config: GuardConfig, user: str) -> str:
    """The drive volume's name for ``user``, as DockerRuntimeSpawner names it:
    its drive_name_template rendered with DockerSpawner's escaping and namespace."""
    from dockerspawner import DockerSpawner

    escaped = DockerSpawner._escape(user)
    namespace = {
        "username": escaped,
        "safe_username": escaped,
        "raw_username": user,
        "prefix": config.prefix,
    }
    try:
        return config.drive_name_template.format(**namespace)
    except (ValueError, KeyError):  # DockerSpawner leaves such templates unrendered
        return config.drive_name_template


def is_runtime_container(labels: Mapping[str, Any] | None) -> bool:
    """Labelled as a kernelhub runtime (only containers the guard let through are)."""
    labels = labels or {}
    return bool(labels.get(USER_LABEL)) and RUNTIME_TYPE_LABEL in labels


def is_runtime_image(config: GuardConfig, image: str, labels: Mapping[str, Any] | None) -> bool:
    return image in config.images or (labels or {}).get(IMAGE_KIND_LABEL) in config.image_kinds


def runtime_labels(labels: Mapping[str, Any]) -> tuple[str, str]:
    """(user, server) of a container about to be created; Refused unless labelled."""
    user, server = labels.get(USER_LABEL), labels.get(SERVER_LABEL)
    kind = labels.get(RUNTIME_TYPE_LABEL)
    if not (isinstance(user, str) and user and isinstance(server, str)):
        raise Refused(f"a container must carry the runtime labels {USER_LABEL}, {SERVER_LABEL}")
    if not (isinstance(kind, str) and kind):
        raise Refused(f"a container must carry the runtime label {RUNTIME_TYPE_LABEL}")
    return user, server


# ---- routes ----------------------------------------------------------------------------

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"  # containers, volumes, networks
IMAGE = r"[A-Za-z0-9][A-Za-z0-9_./:@-]{0,510}"
BOOL = r"(?:0|1|true|false|True|False)"
FALSE = r"(?:0|false|False)"
DIGITS = r"-?[0-9]{1,10}"
ANYTHING = r"[\x20-\x7e]{0,4096}"  # filters: JSON the engine parses; they only narrow

Kind = str  # what the proxy does with a matched route


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    kind: Kind
    query: Mapping[str, str] = field(default_factory=dict)  # parameter -> value regex


def _route(methods: str, path: str, kind: Kind, **query: str) -> Route:
    return Route(tuple(methods.split()), re.compile(path), kind, query)


CONTAINER = rf"/containers/(?P<target>{NAME})"
SERVICE = rf"/services/(?P<target>{NAME})"
ROUTES = (
    _route("GET HEAD", r"/_ping", "forward"),
    _route("GET", r"/version", "forward"),
    _route("GET", rf"/images/(?P<target>{IMAGE})/json", "image-inspect"),
    _route("GET", rf"/networks/(?P<target>{NAME})", "network-inspect", verbose=BOOL),
    _route("GET", r"/volumes", "forward", filters=ANYTHING),
    _route("GET", rf"/volumes/(?P<target>{NAME})", "forward"),
    _route("POST", r"/volumes/create", "volume-create"),
    _route(
        "GET", r"/containers/json", "container-list",
        all=BOOL, limit=DIGITS, size=BOOL, trunc_cmd=BOOL, filters=ANYTHING,
    ),
    _route("POST", r"/containers/create", "container-create", name=rf"/?{NAME}"),
    _route("GET", rf"{CONTAINER}/json", "container-inspect", size=BOOL),
    _route("POST", rf"{CONTAINER}/start", "container"),
    _route("POST", rf"{CONTAINER}/stop", "container", t=DIGITS),
    _route(
        "POST", rf"{CONTAINER}/wait", "container", condition=r"(?:not-running|next-exit|removed)"
    ),
    _route(
        "GET", rf"{CONTAINER}/logs", "container",
        stdout=BOOL, stderr=BOOL, timestamps=BOOL, tail=r"(?:all|[0-9]{1,10})",
        since=DIGITS, until=DIGITS, follow=FALSE,
    ),
    # v removes the container's anonymous volumes only; link would remove a link
    _route("DELETE", CONTAINER, "container", v=BOOL, force=BOOL, link=FALSE),
    # Swarm (SwarmRuntimeSpawner, and the hub's swarm detection): services.py
    _route("GET", r"/info", "info"),
    _route("POST", r"/services/create", "service-create"),
    _route("GET", r"/services", "service-list", filters=ANYTHING, status=BOOL),
    _route("GET", SERVICE, "service-inspect", insertDefaults=BOOL),
    _route("DELETE", SERVICE, "service"),
    _route("GET", r"/tasks", "task-list", filters=ANYTHING),
    _route("GET", r"/nodes", "forward", filters=ANYTHING),
    _route("GET", rf"/nodes/(?P<target>{NAME})", "forward"),
)  # fmt: skip

VERSION = re.compile(r"/v1\.(?P<minor>[0-9]{1,3})(?P<rest>/.*)")
BODY_KINDS = {"container-create", "volume-create", "service-create"}
READ_ONLY_KINDS = {"container-list", "container-inspect"}  # plus GET /_ping and /version


@dataclass(frozen=True)
class Matched:
    route: Route
    version: str  # "/v1.41" or ""
    path: str  # decoded, without the version
    target: str  # the container, image or network named in the path ("" when none)
    query: dict[str, str]

    @property
    def kind(self) -> Kind:
        return self.route.kind

    def url(self, target: str | None = None) -> str:
        """The path to forward: the checked one, with ``target`` (a resolved container
        ID) in place of the name it was asked by."""
        path = self.path
        if target is not None and self.target:
            prefix = "/" + path.split("/")[1] + "/"  # /containers/ or /services/
            rest = path[len(prefix) + len(self.target) :]
            path = f"{prefix}{target}{rest}"
        return self.version + path


def decoded_path(raw: str) -> str:
    """The path the engine's router matches, percent-decoded; Refused for anything
    that two parsers could split differently."""
    if not raw.startswith("/") or not raw.isascii() or "\\" in raw:
        raise Refused("malformed path")
    lowered = raw.lower()
    # an encoded slash, backslash, percent or NUL would let a name span segments
    if any(code in lowered for code in ("%2f", "%5c", "%25", "%00")):
        raise Refused("encoded separators in the path")
    path = unquote(raw, errors="strict")
    if not path.isascii() or not path.isprintable():
        raise Refused("malformed path")
    if "//" in path or any(part in (".", "..") for part in path.split("/")):
        raise Refused("the path must be clean (no //, . or .. segments)")
    return path


def match(method: str, raw_path: str, raw_query: str) -> Matched:
    """The route ``method raw_path?raw_query`` takes; Refused when none allows it."""
    path = decoded_path(raw_path)
    version = ""
    versioned = VERSION.fullmatch(path)
    if versioned:
        if int(versioned["minor"]) < MIN_API_MINOR:
            raise Refused(f"API versions before 1.{MIN_API_MINOR} are refused")
        version, path = path[: -len(versioned["rest"])], versioned["rest"]
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is None or method not in route.methods:
            continue
        query = _query(raw_query, route)
        return Matched(route, version, path, found.groupdict().get("target") or "", query)
    raise Refused(f"{method} {path} is not a call the runtime spawner makes")


def _query(raw: str, route: Route) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw), errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise Refused("malformed query string") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key in query:  # Go reads the first of repeated parameters
            raise Refused(f"repeated query parameter {key!r}")
        allowed = route.query.get(key)
        if allowed is None:
            raise Refused(f"query parameter {key!r} is not allowed here")
        if not re.fullmatch(allowed, value):
            raise Refused(f"query parameter {key!r} has a value not allowed here")
        query[key] = value
    return query


def filter_list(containers: Any) -> list[Any]:
    """A container list with everything but runtimes left out."""
    if not isinstance(containers, list):
        return []
    return [c for c in containers if isinstance(c, dict) and is_runtime_container(c.get("Labels"))]


def check_image_reference(image: str) -> None:
    """An image reference that names an image, and cannot turn the guard's own
    inspect of it into another path (``../containers/ID``)."""
    if not re.fullmatch(IMAGE, image) or any(p in (".", "..") for p in image.split("/")):
        raise Refused(f"Image {image[:100]!r} is not an image reference")
