"""The mining detector's signatures: process names, command-line patterns, pool ports,
read from ``mining_signatures.toml`` (re-exported by ``kernelhub.quotas.detector``)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

SIGNATURES_FILE = "mining_signatures.toml"


class ProcessInfo(NamedTuple):
    """A process of the runtime's container or process tree; cmdline is argv joined by spaces."""

    pid: int
    name: str
    cmdline: str


class SignatureError(ValueError):
    """The signature file is malformed; the message names the file and the key."""


class CmdlinePattern(NamedTuple):
    regex: re.Pattern[str]
    weight: float
    meaning: str


@dataclass(frozen=True)
class Signatures:
    """Process names (lower case) by category, command-line patterns, pool ports."""

    names: Mapping[str, str]
    name_weight: float
    cmdline: tuple[CmdlinePattern, ...]
    pool_ports: frozenset[int]
    port_weight: float
    source: str = SIGNATURES_FILE
    _name_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Longest names first so "xmrig-cuda" wins over "xmrig"; a version or build
        # suffix is tolerated ("lolMiner_v1.88", "hashcat.bin"), other text is not.
        alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        suffix = r"(?:[-_.]?v?\d[\w.-]*)?(?:\.(?:exe|bin))?"
        pattern = rf"(?P<name>{alternatives}){suffix}" if self.names else r"(?!)"
        object.__setattr__(self, "_name_re", re.compile(pattern, re.I))

    def match_process(self, process: ProcessInfo) -> list[tuple[str, float]]:
        """(why, weight) for each signature the process matches."""
        hits: list[tuple[str, float]] = []
        argv0 = os.path.basename((process.cmdline.split() or [""])[0])
        for candidate in dict.fromkeys(c for c in (process.name, argv0) if c):
            if found := self._name_re.fullmatch(candidate):
                category = self.names[found.group("name").lower()]
                hits.append((f"name {candidate!r} is a known {category}", self.name_weight))
        for p in self.cmdline:
            if found := p.regex.search(process.cmdline):
                hits.append((f"cmdline has {p.meaning} ({found.group(0).strip()!r})", p.weight))
        return hits


def parse_signatures(text: str, source: str = SIGNATURES_FILE) -> Signatures:
    """Signatures from TOML text; SignatureError names ``source`` and the bad key."""

    def check(ok: bool, where: str, problem: str) -> None:
        if not ok:
            raise SignatureError(f"{source}: {where}: {problem}")

    def weight(table: dict[str, Any], where: str) -> float:
        value: Any = table.get("weight")
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
        check(ok, f"{where}.weight", f"expected a number in (0, 1], got {value!r}")
        return float(value)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SignatureError(f"{source}: not valid TOML ({e})") from None
    check(data.get("version") == 1, "version", f"expected 1, got {data.get('version')!r}")
    for key in ("process_names", "pool_ports"):
        check(isinstance(data.get(key), dict), f"[{key}]", "missing, or not a table")
    categories, where = data["process_names"].get("categories"), "[process_names.categories]"
    check(isinstance(categories, dict) and bool(categories), where, "expected category = [names]")
    names: dict[str, str] = {}
    for category, members in categories.items():
        ok = isinstance(members, list) and all(isinstance(m, str) and m for m in members)
        check(ok, f"{where}.{category}", f"expected a list of names, got {members!r}")
        names.update((m.lower(), category) for m in members)
    entries = data.get("cmdline", [])
    check(isinstance(entries, list), "[[cmdline]]", "expected an array of tables")
    cmdline = []
    for i, entry in enumerate(entries):
        where = f"[[cmdline]] #{i + 1}"
        ok = isinstance(entry, dict) and isinstance(entry.get("pattern"), str)
        check(ok, f"{where}.pattern", "missing, or not a string")
        try:
            regex = re.compile(entry["pattern"], re.I)
        except re.error as e:
            raise SignatureError(f"{source}: {where}.pattern: not a valid regex ({e})") from None
        meaning = entry.get("meaning")
        check(isinstance(meaning, str) and bool(meaning), f"{where}.meaning", "missing")
        cmdline.append(CmdlinePattern(regex, weight(entry, where), meaning))
    ports = data["pool_ports"].get("ports")
    ok = isinstance(ports, list) and all(type(p) is int and 0 < p < 65536 for p in ports)
    check(ok, "[pool_ports].ports", f"expected a list of TCP ports 1-65535, got {ports!r}")
    name_weight = weight(data["process_names"], "[process_names]")
    port_weight = weight(data["pool_ports"], "[pool_ports]")
    return Signatures(names, name_weight, tuple(cmdline), frozenset(ports), port_weight, source)


def load_signatures(path: str | os.PathLike[str] | None = None) -> Signatures:
    """Read and parse a signature file; by default the one shipped beside this module."""
    if path is None:
        resource = resources.files("kernelhub.quotas").joinpath(SIGNATURES_FILE)
        return parse_signatures(resource.read_text(encoding="utf-8"), SIGNATURES_FILE)
    return parse_signatures(Path(path).read_text(encoding="utf-8"), os.fspath(path))
