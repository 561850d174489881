"""The snippet file format: one Markdown file per snippet (see README.md).

    ---
    title: Load a CSV with pandas
    description: Read a CSV file from your drive into a DataFrame.
    tags: [pandas, csv, data]
    language: python
    category: Data
    requires: [pandas]
    ---

    Text outside fences becomes a markdown cell.

    ```python
    import pandas as pd
    ```

The front matter is a small, hand-checked subset of YAML (`key: value` and
`key: [a, b]`), parsed here so that the runtimes need no YAML library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

LANGUAGES = frozenset({"python"})  # the kernels the runtime images ship
STRING_KEYS = ("title", "description", "language", "category")
LIST_KEYS = ("tags", "requires")
DEFAULT_CATEGORY = "General"
MAX_FILE_BYTES = 256 * 1024  # a snippet is a few cells; anything larger is a mistake
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MODULE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,39}$")
_FENCE = re.compile(r"^(?P<ticks>`{3,})[ \t]*(?P<info>[^`\s]*)[ \t]*$")
_KEY = re.compile(r"^(?P<key>[a-z_]+)[ \t]*:[ \t]*(?P<value>.*)$")


class SnippetError(ValueError):
    """Why a snippet (file or request body) is not valid; the message is shown to users."""


@dataclass
class Cell:
    cell_type: str  # "code" | "markdown"
    source: str

    def to_json(self) -> dict[str, str]:
        return {"cell_type": self.cell_type, "source": self.source}


@dataclass
class Snippet:
    id: str
    title: str
    cells: list[Cell]
    description: str = ""
    tags: list[str] = field(default_factory=list)
    language: str = "python"
    category: str = DEFAULT_CATEGORY
    requires: list[str] = field(default_factory=list)  # importable modules it needs
    source: str = "builtin"  # "builtin" | "site" | "user"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "language": self.language,
            "category": self.category,
            "requires": list(self.requires),
            "cells": [cell.to_json() for cell in self.cells],
        }

    def code(self) -> list[str]:
        return [cell.source for cell in self.cells if cell.cell_type == "code"]


def _parse_scalar(text: str, where: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text.startswith(('"', "'")):
        raise SnippetError(f"{where}: unterminated quoted string")
    return text


def _parse_list(text: str, where: str) -> list[str]:
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise SnippetError(f"{where}: expected a list like [a, b]")
    inner = text[1:-1].strip()
    if not inner:
        return []
    # quoted items may hold commas, so split outside quotes only
    items = re.findall(r"\s*(\"[^\"]*\"|'[^']*'|[^,]+)\s*(?:,|$)", inner)
    values = [_parse_scalar(item, where) for item in items]
    if any(not value for value in values):
        raise SnippetError(f"{where}: empty list item")
    return values


def parse_front_matter(lines: list[str]) -> dict[str, Any]:
    """`key: value` and `key: [a, b]` lines; blank lines and `# comments` are skipped."""
    meta: dict[str, Any] = {}
    for number, line in enumerate(lines, start=2):  # line 1 is the opening ---
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY.match(line)
        if not match:
            raise SnippetError(f"front matter line {number}: expected `key: value`")
        key, value = match["key"], match["value"]
        where = f"front matter line {number} ({key})"
        if key in meta:
            raise SnippetError(f"{where}: duplicate key")
        if key in STRING_KEYS:
            meta[key] = _parse_scalar(value, where)
        elif key in LIST_KEYS:
            meta[key] = _parse_list(value, where)
        else:
            # strict, so that a typo (`tag:`) is reported instead of silently ignored
            known = ", ".join(STRING_KEYS + LIST_KEYS)
            raise SnippetError(f"{where}: unknown key (known: {known})")
    return meta


def _split_cells(lines: list[str], language: str, first_line: int) -> list[Cell]:
    cells: list[Cell] = []
    text: list[str] = []

    def flush_text() -> None:
        body = "\n".join(text).strip("\n")
        if body.strip():
            cells.append(Cell("markdown", body))
        text.clear()

    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        # only fences in the snippet's language (code) or `markdown` (a markdown cell that
        # itself holds fences) split cells; any other fenced block is part of the text
        if opening and opening["info"] in (language, "markdown"):
            ticks = len(opening["ticks"])
            end = i + 1
            while end < len(lines) and not re.fullmatch(rf"`{{{ticks},}}[ \t]*", lines[end]):
                end += 1
            if end == len(lines):
                raise SnippetError(f"line {first_line + i}: unclosed ``` fence")
            flush_text()
            body = "\n".join(lines[i + 1 : end])
            kind = "code" if opening["info"] == language else "markdown"
            if kind == "code" or body.strip():
                cells.append(Cell(kind, body))
            i = end + 1
            continue
        text.append(lines[i])
        i += 1
    flush_text()
    return cells


def validate(snippet: Snippet, cells: bool = True) -> Snippet:
    """Checks shared by files and request bodies; returns the snippet."""
    if not ID_PATTERN.match(snippet.id):
        raise SnippetError(
            f"id {snippet.id!r}: use 1-64 lowercase letters, digits, - and _ (file name stem)"
        )
    if not snippet.title.strip():
        raise SnippetError("title is missing or empty")
    if len(snippet.title) > 120:
        raise SnippetError("title is longer than 120 characters")
    if snippet.language not in LANGUAGES:
        raise SnippetError(
            f"unknown language {snippet.language!r} (known: {', '.join(sorted(LANGUAGES))})"
        )
    for tag in snippet.tags:
        if not TAG_PATTERN.match(tag):
            raise SnippetError(f"tag {tag!r}: use up to 40 letters, digits, spaces and _.+-")
    for module in snippet.requires:
        if not MODULE_PATTERN.match(module):
            raise SnippetError(f"requires {module!r}: expected an importable module name")
    if cells and not any(cell.cell_type == "code" for cell in snippet.cells):
        raise SnippetError("no code cell")
    return snippet


def parse(text: str, snippet_id: str, source: str = "builtin") -> Snippet:
    """The snippet in a file's text; raises SnippetError saying what is wrong."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not text.strip():
        raise SnippetError("empty file")
    if lines[0].strip() != "---":
        raise SnippetError("no front matter: the file must start with a --- line")
    try:
        close = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise SnippetError("front matter is not closed by a --- line") from None
    meta = parse_front_matter(lines[1:close])
    if "title" not in meta:
        raise SnippetError("front matter has no title")
    language = meta.get("language", "python")
    snippet = Snippet(
        id=snippet_id,
        title=meta["title"],
        description=meta.get("description", ""),
        tags=meta.get("tags", []),
        language=language,
        category=meta.get("category") or DEFAULT_CATEGORY,
        requires=meta.get("requires", []),
        cells=[],
        source=source,
    )
    validate(snippet, cells=False)  # the language decides which fences are code, so check it first
    snippet.cells = _split_cells(lines[close + 1 :], language, close + 2)
    return validate(snippet)


def _quote(value: str) -> str:
    # quote what the reader would otherwise trim or misread; the reader drops just the
    # outer pair of quotes, so quotes inside need no escaping
    if value != value.strip() or value[:1] in "\"'[" or not value:
        return f'"{value}"'
    return value


def _fence_for(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"^`{3,}", body, flags=re.M)), default=2)
    return "`" * (longest + 1)


def dump(snippet: Snippet) -> str:
    """The file text of a snippet; `parse(dump(s))` gives `s` back."""
    for key in ("title", "description", "category"):
        if "\n" in getattr(snippet, key):
            raise SnippetError(f"{key} must be a single line")
    items = [_quote(tag) for tag in snippet.tags]
    requires = [_quote(module) for module in snippet.requires]
    out = ["---", f"title: {_quote(snippet.title)}"]
    if snippet.description:
        out.append(f"description: {_quote(snippet.description)}")
    out += [f"tags: [{', '.join(items)}]", f"language: {snippet.language}"]
    out.append(f"category: {_quote(snippet.category)}")
    if requires:
        out.append(f"requires: [{', '.join(requires)}]")
    out.append("---")
    previous = ""
    for cell in snippet.cells:
        body = cell.source.replace("\r\n", "\n")
        if cell.cell_type == "code":
            fence = _fence_for(body)
            out += ["", f"{fence}{snippet.language}", body, fence]
        else:
            body = body.strip("\n")
            # bare text is nicer to read, but two bare markdown cells would merge into
            # one and a fence inside one would split it, so those get a markdown fence
            if previous == "markdown" or re.search(r"^`{3,}", body, flags=re.M):
                fence = _fence_for(body)
                out += ["", f"{fence}markdown", body, fence]
            else:
                out += ["", body]
        previous = cell.cell_type
    return "\n".join(out) + "\n"
