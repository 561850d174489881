"""The mining detector's signatures: process names, command-line patterns, pool ports,
read from ``mining_signatures.toml`` (re-exported by ``kernelhub.quotas.detector``).

A command line is its user's to write (up to megabytes of arguments), and the daemon
matches it on behalf of every runtime, so matching must take time linear in what is
matched: the line is cut to ``MAX_CMDLINE_CHARS``, each argument to
``MAX_ARGUMENT_CHARS``, every pattern is anchored at an argument (``match``, never
``search`` over the line), and a pattern that could backtrack super-linearly is refused
when the file is loaded (``linear_time_problem``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from re import _parser as sre  # type: ignore[attr-defined]  # the stdlib's regex parser
from typing import Any, NamedTuple

SIGNATURES_FILE = "mining_signatures.toml"
# What of a command line is matched: a miner's options come first, and a user who pads
# the line only hides them from these patterns, never from the GPU, CPU and pool signals.
MAX_CMDLINE_CHARS = 4096
MAX_ARGUMENT_CHARS = 256  # of each argument (a Stratum URL with a wallet is ~150)
# A {m,n} repeat with n up to this costs a constant; above it, it counts as unbounded.
MAX_BOUNDED_REPEAT = 16
_ONE_CHARACTER = {sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN}
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT}


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
        args = arguments(process.cmdline)
        windows = match_windows(args)
        argv0 = os.path.basename(args[0]) if args else ""
        name = process.name[:MAX_ARGUMENT_CHARS]
        for candidate in dict.fromkeys(c for c in (name, argv0) if c):
            if found := self._name_re.fullmatch(candidate):
                category = self.names[found.group("name").lower()]
                hits.append((f"name {candidate!r} is a known {category}", self.name_weight))
        for p in self.cmdline:
            if found := next(filter(None, map(p.regex.match, windows)), None):
                hits.append((f"cmdline has {p.meaning} ({found.group(0).strip()!r})", p.weight))
        return hits


def arguments(cmdline: str) -> list[str]:
    """The command line's arguments as the patterns see them: its first MAX_CMDLINE_CHARS,
    split at whitespace, each argument cut to MAX_ARGUMENT_CHARS."""
    return [a[:MAX_ARGUMENT_CHARS] for a in cmdline[:MAX_CMDLINE_CHARS].split()]


def match_windows(args: list[str]) -> list[str]:
    """Where a pattern is matched (anchored at the start): each argument, and the text after
    its first ``=``, each followed by one space and the next argument, so that ``-o
    host:port``, ``--url=host:port`` and the ``host:port`` itself are each one window. A
    character is in at most three windows: the work is linear in the command line."""
    windows = []
    for i, arg in enumerate(args):
        tail = f" {args[i + 1]}" if i + 1 < len(args) else ""
        windows.append(arg + tail)
        _, eq, value = arg.partition("=")
        if eq and value:
            windows.append(value + tail)
    return windows


def linear_time_problem(pattern: str) -> str | None:
    """Why matching ``pattern`` at the start of a text could take more than linear time in
    the text's length (None where it cannot), for Python's backtracking engine.

    Allowed: literals, classes, anchors, alternatives, groups, ``?`` on anything, and
    repeats of one character or class (``\\S*``, ``[0-9]{2,5}``). Along any way through the
    pattern at most one repeat without a small bound (``*``, ``+``, ``{n,}``) may backtrack,
    and nothing unbounded may come after it: the engine retries what follows at each of its
    lengths. Possessive repeats (``*+``, ``++``) and atomic groups (``(?>...)``) do not
    backtrack. Backreferences and lookarounds are refused outright."""
    try:
        _linear(sre.parse(pattern, re.I), after_backtracking=False)
    except _Superlinear as e:
        return str(e)
    return None


class _Superlinear(Exception):
    pass


def _linear(items: Any, after_backtracking: bool) -> bool:
    """Walks a parsed pattern in order; raises _Superlinear; answers whether a repeat that
    can backtrack without bound precedes the end of ``items`` (on some way through them)."""
    for op, arg in items:
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise _Superlinear("backreferences are not allowed")
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            raise _Superlinear("lookarounds ((?=, (?!, (?<=, (?<!) are not allowed")
        if op is sre.SUBPATTERN:
            after_backtracking = _linear(arg[3], after_backtracking)
        elif op is sre.BRANCH:
            after_backtracking = any([_linear(b, after_backtracking) for b in arg[1]])
        elif op is sre.ATOMIC_GROUP:
            _linear(arg, after_backtracking)  # once matched, never retried from outside
        elif op in _REPEATS:
            _, high, body = arg
            if high <= 1:  # x? on anything: one more way through (past the body, or not)
                after_backtracking = _linear(body, after_backtracking)
                continue
            if len(body) != 1 or body[0][0] not in _ONE_CHARACTER:
                raise _Superlinear(
                    "only one character or class may be repeated (write [ab]+, not (a|b)+, "
                    "(ab)+ or (a+)+)"
                )
            if high > MAX_BOUNDED_REPEAT:
                if after_backtracking:
                    raise _Superlinear(
                        "an unbounded repeat comes after one that can backtrack (quadratic "
                        "time): make the earlier one possessive (*+, ++) or atomic ((?>...))"
                    )
                after_backtracking = op is not sre.POSSESSIVE_REPEAT
    return after_backtracking


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
        problem = linear_time_problem(entry["pattern"])
        check(problem is None, f"{where}.pattern", f"{problem}, in {entry['pattern']!r}")
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
