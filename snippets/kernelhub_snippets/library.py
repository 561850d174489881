"""The three snippet sources, merged: built-in < site-wide < the user's own.

A later source wins an id clash, so a hub admin can replace a built-in snippet with a
site one of the same file name, and a user can replace either with their own. Every
file is read on each request: the folders are small, and a site snippet the admin adds
(or a user snippet saved from another tab) shows up without restarting the server.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelhub_snippets.fileformat import (
    ID_PATTERN,
    MAX_FILE_BYTES,
    Cell,
    Snippet,
    SnippetError,
    dump,
    parse,
    validate,
)

BUILTIN_DIR = Path(__file__).parent / "builtin"
SOURCES = ("builtin", "site", "user")  # lowest precedence first
SUFFIX = ".md"


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why: listed next to the snippets, never an error."""

    source: str
    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "path": self.path, "reason": self.reason}


def read_snippet_file(path: Path, source: str) -> Snippet:
    """One snippet file; raises SnippetError (or OSError) saying why it cannot be used."""
    snippet_id = path.name.removesuffix(SUFFIX)
    if not ID_PATTERN.match(snippet_id):
        raise SnippetError(
            f"file name {path.name!r}: use lowercase letters, digits, - and _ before {SUFFIX}"
        )
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SnippetError(f"larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SnippetError(f"not UTF-8 text (byte {e.start})") from None
    return parse(text.removeprefix("\ufeff"), snippet_id, source)


def read_dir(directory: Path, source: str) -> tuple[list[Snippet], list[Problem]]:
    """Every `*.md` file of a folder (not its subfolders). A missing folder is no problem:
    most deployments have no site snippets and new users have saved none."""
    snippets: list[Snippet] = []
    problems: list[Problem] = []
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return snippets, problems
    except OSError as e:
        return snippets, [Problem(source, str(directory), f"cannot list the folder: {e}")]
    for path in entries:
        # README.md and friends may document a folder; hidden files are editor leftovers
        if path.suffix != SUFFIX or path.name.startswith(".") or path.stem.isupper():
            continue
        try:
            if not path.is_file():
                continue
            snippets.append(read_snippet_file(path, source))
        except (SnippetError, OSError) as e:
            problems.append(Problem(source, str(path), str(e)))
    return snippets, problems


@dataclass
class Listing:
    snippets: list[Snippet]
    problems: list[Problem]

    def to_json(self) -> dict[str, Any]:
        return {
            "snippets": [snippet.to_json() for snippet in self.snippets],
            "problems": [problem.to_json() for problem in self.problems],
        }


class Library:
    """The merged sources; `site_dir` and `user_dir` come from the server's config."""

    def __init__(self, site_dir: Path, user_dir: Path, builtin_dir: Path = BUILTIN_DIR) -> None:
        self.dirs = {"builtin": builtin_dir, "site": site_dir, "user": user_dir}

    @property
    def user_dir(self) -> Path:
        return self.dirs["user"]

    def listing(self) -> Listing:
        merged: dict[str, Snippet] = {}
        problems: list[Problem] = []
        for source in SOURCES:
            snippets, found = read_dir(self.dirs[source], source)
            problems += found
            for snippet in snippets:
                merged[snippet.id] = snippet  # later sources win
        ordered = sorted(merged.values(), key=lambda s: (s.category.lower(), s.title.lower()))
        return Listing(ordered, problems)

    def get(self, snippet_id: str) -> Snippet | None:
        if not ID_PATTERN.match(snippet_id):  # ids come from URLs: no paths, no ..
            return None
        for source in reversed(SOURCES):
            path = self.dirs[source] / f"{snippet_id}{SUFFIX}"
            try:
                return read_snippet_file(path, source)
            except (SnippetError, OSError):
                continue  # a broken user file falls back to the site/builtin one, as listed
        return None

    def user_path(self, snippet_id: str) -> Path:
        if not ID_PATTERN.match(snippet_id):
            raise SnippetError(f"id {snippet_id!r} is not a valid snippet id")
        return self.user_dir / f"{snippet_id}{SUFFIX}"

    def free_id(self, title: str) -> str:
        """An id from the title that no user snippet has yet (saving never overwrites
        unless the request names the id)."""
        slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in title.lower())
        slug = "-".join(part for part in slug.split("-") if part)[:56] or "snippet"
        candidate, n = slug, 2
        while self.user_path(candidate).exists():
            candidate, n = f"{slug}-{n}", n + 1
        return candidate

    def save(self, snippet: Snippet) -> Snippet:
        """Write a user snippet atomically, so a crash never leaves half a file behind."""
        snippet.source = "user"
        text = dump(validate(snippet))
        parse(text, snippet.id, "user")  # what is written must read back
        path = self.user_path(snippet.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".saving-", suffix=SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return snippet

    def delete(self, snippet_id: str) -> bool:
        """Remove a user snippet (broken or not); False where the user has none."""
        path = self.user_path(snippet_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def owner(self, snippet_id: str) -> str | None:
        """The source whose file has this id, whether or not it parses."""
        if not ID_PATTERN.match(snippet_id):
            return None
        for source in reversed(SOURCES):
            if (self.dirs[source] / f"{snippet_id}{SUFFIX}").is_file():
                return source
        return None


def snippet_from_request(body: Any, library: Library) -> Snippet:
    """The snippet of a POST body; raises SnippetError with a message for a 400."""
    if not isinstance(body, dict):
        raise SnippetError("the body must be a JSON object")
    known = {"id", "title", "description", "tags", "language", "category", "requires", "cells"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise SnippetError(f"unknown field(s): {', '.join(unknown)}")
    for key in ("id", "title", "description", "language", "category"):
        if key in body and not isinstance(body[key], str):
            raise SnippetError(f"{key} must be a string")
    for key in ("tags", "requires"):
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SnippetError(f"{key} must be a list of strings")
    title = body.get("title", "")
    if not title.strip():
        raise SnippetError("title is missing or empty")
    cells = body.get("cells")
    if not isinstance(cells, list) or not cells:
        raise SnippetError("cells must be a non-empty list")
    parsed: list[Cell] = []
    for n, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise SnippetError(f"cells[{n}] must be an object")
        kind, source = cell.get("cell_type"), cell.get("source")
        if kind not in ("code", "markdown"):
            raise SnippetError(f"cells[{n}].cell_type must be 'code' or 'markdown'")
        if isinstance(source, list):  # nbformat allows a list of lines
            source = "".join(source) if all(isinstance(s, str) for s in source) else None
        if not isinstance(source, str):
            raise SnippetError(f"cells[{n}].source must be a string")
        parsed.append(Cell(kind, source))
    snippet = Snippet(
        id=body.get("id") or library.free_id(title),
        title=title.strip(),
        description=body.get("description", "").strip(),
        tags=[tag.strip() for tag in body.get("tags", [])],
        language=body.get("language", "python"),
        category=body.get("category", "").strip() or "My snippets",
        requires=body.get("requires", []),
        cells=parsed,
        source="user",
    )
    return validate(snippet)
