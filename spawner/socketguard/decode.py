"""Request bodies read the way the engine reads them, or refused.

The engine decodes bodies with Go's encoding/json: a key names a struct field
case-insensitively (``privileged`` is ``Privileged``), escapes are decoded (``"\\/etc"``
is ``/etc``), and among duplicate keys the last one wins. Go's case folding also maps
U+017F (long s) to ``s`` and U+212A (Kelvin sign) to ``k``. So the guard decodes with a
real JSON parser, refuses what the two parsers could read differently (non-ASCII or
duplicate keys, invalid UTF-8, lone surrogates, NaN, trailing data), and renames every
key to its field's canonical name before any rule looks at it. Rules then see
normalised data only, never raw text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any


class Refused(Exception):
    """The request is not let through; the message says why (no secrets in it)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if not key.isascii():
            # Go's EqualFold folds U+017F and U+212A (Kelvin) to ASCII letters: refuse them all
            raise Refused(f"non-ASCII key {key!a} in the body")
        folded = key.lower()
        if folded in seen:
            # Go keeps the last of the duplicates; a rule might have read the first
            raise Refused(f"duplicate key {key!r} in the body (keys match case-insensitively)")
        seen.add(folded)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise Refused(f"{name} is not JSON")


def decode_body(raw: bytes) -> Any:
    """The JSON value of ``raw``, or Refused."""
    try:
        text = raw.decode("utf-8")  # strict: Go would replace invalid bytes silently
    except UnicodeDecodeError:
        raise Refused("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except ValueError as e:  # JSONDecodeError, or trailing data Go's decoder ignores
        raise Refused(f"the body is not one JSON value ({str(e).split(':')[0]})") from None
    try:
        # lone surrogates ("\ud800"): Go turns them into U+FFFD, Python keeps them
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("the body holds an unpaired surrogate escape") from None
    return value


# A schema says which fields an object may have: canonical name -> what its value is.
# A value is one of: a nested Schema (a struct), MAP (an object whose keys are data,
# such as labels), or ANY (a scalar or list the rules check themselves).
Schema = Mapping[str, Any]
MAP = "map"
ANY = "any"


def normalise(value: Any, schema: Schema, where: str) -> dict[str, Any]:
    """``value`` (a JSON object) with each key renamed to its field's canonical name,
    recursively; Refused for an unknown field (the engine would ignore it or, worse,
    honour it) or a value of the wrong JSON type."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refused(f"{where} must be an object")
    by_fold = {name.lower(): name for name in schema}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = by_fold.get(key.lower())
        if name is None:
            raise Refused(f"field {f'{where}.' if where else ''}{key} is not allowed")
        kind = schema[name]
        path = f"{where}.{name}" if where else name
        if isinstance(kind, Mapping):
            out[name] = normalise(item, kind, path)
        elif kind == MAP:
            if item is not None and not isinstance(item, dict):
                raise Refused(f"{path} must be an object")
            out[name] = dict(item or {})
        else:
            out[name] = item
    return out


def check_fields(data: Mapping[str, Any], rules: Mapping[str, Callable[[Any], str | None]]) -> None:
    """Apply each present field's rule: a rule returns a refusal message or None."""
    for name, rule in rules.items():
        if name in data:
            problem = rule(data[name])
            if problem:
                raise Refused(f"{name}: {problem}")
