"""kernelhub-snippets (snippets/): the server extension's REST API under a real Jupyter
Server (pytest-jupyter), the snippet file format, and every built-in snippet run.

Built-in snippets run here when the test environment has what their front matter's
`requires` lists; the others (TensorFlow, pandas, plots...) are listed by that same data
and run in the CPU image (`kernelhub-snippets-check` there), whose packages.txt must
provide every module they require.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import kernelhub_snippets
import pytest
from kernelhub_snippets.check import (
    NETWORK_TAG,
    builtin_snippets,
    missing_requirements,
    run_snippet,
    runnable,
)
from kernelhub_snippets.fileformat import Cell, Snippet, SnippetError, dump, parse

# The fixtures are imported into this module rather than registered as a plugin: the
# plugin's autouse fixtures (an event loop and a ServerApp cleanup per test) would
# otherwise run around every test of the suite.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from kernelhub.imagetools import build as img
from kernelhub.runtimes.engine import find_image

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = builtin_snippets()
RUN_HERE = [s for s in runnable(BUILTINS) if not missing_requirements(s)]
CPU_IMAGE_ONLY = [s for s in runnable(BUILTINS) if missing_requirements(s)]
NEEDS_NETWORK = {"install-package", "download-url"}

Api = Callable[..., tuple[int, Any]]

GOOD = """---
title: {title}
tags: [a, b]
---

```python
print({title!r})
```
"""


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    (tmp_path / "site-snippets").mkdir()
    return tmp_path / "site-snippets"


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    return tmp_path / "drive" / ".kernelhub" / "snippets"  # created by the first save


@pytest.fixture  # type: ignore[no-redef]  # replaces pytest-jupyter's (empty) one
def jp_server_config(site_dir: Path, user_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"kernelhub_snippets": True}},
        "KernelhubSnippets": {"site_dir": str(site_dir), "user_dir": str(user_dir)},
    }


@pytest.fixture
def api(jp_fetch: Any, jp_asyncio_loop: Any) -> Api:
    """Synchronous requests: (status, decoded JSON body or None)."""

    def call(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        if body is not None:
            kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body)
        elif method == "POST":
            kwargs["body"] = b""
        future = jp_fetch("kernelhub-snippets", path, method=method, raise_error=False, **kwargs)
        response = jp_asyncio_loop.run_until_complete(future)
        return response.code, json.loads(response.body) if response.body else None

    return call


def by_id(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {snippet["id"]: snippet for snippet in listing["snippets"]}


def test_enabled_on_install() -> None:
    # the wheel's shared-data: Jupyter Server reads this under the environment's prefix
    config = Path(sys.prefix, "etc/jupyter/jupyter_server_config.d/kernelhub_snippets.json")
    assert json.loads(config.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"kernelhub_snippets": True}}
    }
    assert kernelhub_snippets._jupyter_server_extension_points() == [
        {"module": "kernelhub_snippets"}
    ]


def test_lists_builtin_snippets(api: Api) -> None:
    status, listing = api("GET", "snippets")
    assert status == 200
    assert listing["problems"] == []
    snippets = by_id(listing)
    assert len(snippets) >= 22 and {s["source"] for s in snippets.values()} == {"builtin"}
    gpu = snippets["gpu-tensorflow"]
    assert set(gpu) == {
        "id", "source", "title", "description", "tags", "language", "category",
        "requires", "cells",
    }  # fmt: skip
    assert any("tf.test.gpu_device_name()" in c["source"] for c in gpu["cells"])
    assert all(
        c["cell_type"] in ("code", "markdown") for s in snippets.values() for c in s["cells"]
    )
    status, one = api("GET", "snippets/nvidia-smi")
    assert status == 200 and one == snippets["nvidia-smi"]


def test_precedence_user_over_site_over_builtin(api: Api, site_dir: Path, user_dir: Path) -> None:
    (site_dir / "pandas-csv.md").write_text(GOOD.format(title="Site CSV"))
    (site_dir / "team-setup.md").write_text(GOOD.format(title="Site setup"))
    (site_dir / "only-site.md").write_text(GOOD.format(title="Only site"))
    user_dir.mkdir(parents=True)
    (user_dir / "team-setup.md").write_text(GOOD.format(title="My setup"))
    (user_dir / "nvidia-smi.md").write_text(GOOD.format(title="My GPU check"))

    status, listing = api("GET", "snippets")
    assert status == 200 and listing["problems"] == []
    snippets = by_id(listing)
    expected = {
        "pandas-csv": ("site", "Site CSV"),
        "team-setup": ("user", "My setup"),
        "only-site": ("site", "Only site"),
        "nvidia-smi": ("user", "My GPU check"),
        "drive-location": ("builtin", "Where your drive lives and how much space is left"),
    }
    for snippet_id, (source, title) in expected.items():
        assert (snippets[snippet_id]["source"], snippets[snippet_id]["title"]) == (source, title)
        status, one = api("GET", f"snippets/{snippet_id}")
        assert (status, one["source"]) == (200, source)
    assert len(snippets) == len(BUILTINS) + 2  # one entry per id


MALFORMED = [
    # (file name, content, reason in `problems`)
    ("no-title.md", "---\ndescription: x\n---\n```python\n1\n```\n", "no title"),
    ("empty-title.md", "---\ntitle:\n---\n```python\n1\n```\n", "title is missing"),
    ("bad-line.md", "---\ntitle x\n---\n```python\n1\n```\n", "expected `key: value`"),
    ("bad-list.md", "---\ntitle: x\ntags: a, b\n---\n```python\n1\n```\n", "expected a list"),
    ("unknown-key.md", "---\ntitle: x\ntag: [a]\n---\n```python\n1\n```\n", "unknown key"),
    ("duplicate-key.md", "---\ntitle: x\ntitle: y\n---\n```python\n1\n```\n", "duplicate key"),
    ("unclosed.md", "---\ntitle: x\n```python\n1\n```\n", "not closed"),
    ("no-front.md", "# Title\n```python\n1\n```\n", "no front matter"),
    ("cobol.md", "---\ntitle: x\nlanguage: cobol\n---\n```cobol\n1\n```\n", "unknown language"),
    ("empty.md", "", "empty file"),
    ("blank.md", "\n  \n", "empty file"),
    ("latin1.md", b"---\ntitle: caf\xe9\n---\n```python\n1\n```\n", "not UTF-8"),
    ("no-code.md", "---\ntitle: x\n---\njust text\n", "no code cell"),
    ("open-fence.md", "---\ntitle: x\n---\n```python\nprint(1)\n", "unclosed ``` fence"),
    ("Bad Name.md", GOOD.format(title="x"), "file name"),
    ("bad-tag.md", '---\ntitle: x\ntags: ["a/b"]\n---\n```python\n1\n```\n', "tag 'a/b'"),
    ("huge.md", GOOD.format(title="x") + "#" * 300_000, "larger than 256 KiB"),
]


@pytest.mark.parametrize("where", ["site", "user"])
@pytest.mark.parametrize("case", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_file_is_reported_and_skipped(
    api: Api, site_dir: Path, user_dir: Path, where: str, case: tuple[str, str | bytes, str]
) -> None:
    name, content, reason = case
    folder = site_dir if where == "site" else user_dir
    folder.mkdir(parents=True, exist_ok=True)
    bad = folder / name
    bad.write_bytes(content.encode() if isinstance(content, str) else content)
    (folder / "fine.md").write_text(GOOD.format(title="Still here"))
    (folder / "README.md").write_text("documents the folder; not a snippet\n")

    status, listing = api("GET", "snippets")
    assert status == 200
    [problem] = listing["problems"]
    assert problem["source"] == where and problem["path"] == str(bad)
    assert reason in problem["reason"]
    snippets = by_id(listing)
    assert snippets["fine"]["title"] == "Still here"
    assert len(snippets) == len(BUILTINS) + 1


def test_broken_user_file_falls_back_to_the_builtin(api: Api, user_dir: Path) -> None:
    user_dir.mkdir(parents=True)
    (user_dir / "nvidia-smi.md").write_text("---\ntitle: broken\n")
    listing = api("GET", "snippets")[1]
    assert by_id(listing)["nvidia-smi"]["source"] == "builtin"
    assert len(listing["problems"]) == 1
    assert api("GET", "snippets/nvidia-smi")[1]["source"] == "builtin"


@pytest.mark.parametrize("snippet_id", ["no-such-snippet", "UPPER", "a.b"])
def test_get_unknown_snippet_is_404(api: Api, snippet_id: str) -> None:
    status, body = api("GET", f"snippets/{snippet_id}")
    assert status == 404 and body["status"] == 404 and "no snippet" in body["message"]


def test_ids_in_urls_cannot_name_paths(
    http_server_client: Any,
    jp_asyncio_loop: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    tmp_path: Path,
) -> None:
    # tornado decodes %2F inside the id after routing, so the id must be checked
    (tmp_path / "secret.md").write_text(GOOD.format(title="outside every folder"))
    for raw in ("..%2Fsecret", "..%2F..%2Fsecret", "%2E%2E%2Fsecret"):
        url = f"{jp_base_url}kernelhub-snippets/snippets/{raw}"
        for method in ("GET", "DELETE"):
            future = http_server_client.fetch(
                url, method=method, headers=jp_auth_header, raise_error=False
            )
            response = jp_asyncio_loop.run_until_complete(future)
            assert response.code == 404, (raw, method)
    assert (tmp_path / "secret.md").exists()


CELLS = [
    {"cell_type": "markdown", "source": "Load my data"},
    {"cell_type": "code", "source": "import json\nprint(json.dumps({'a': 1}))"},
]

BAD_BODIES = [
    # (body, message in the 400 reply)
    ("not json", "the body is not JSON"),
    ("", "the body must be a JSON object"),
    ([1, 2], "must be a JSON object"),
    ({"cells": CELLS}, "title is missing or empty"),
    ({"title": "   ", "cells": CELLS}, "title is missing or empty"),
    ({"title": 5, "cells": CELLS}, "title must be a string"),
    ({"title": "x"}, "cells must be a non-empty list"),
    ({"title": "x", "cells": []}, "cells must be a non-empty list"),
    ({"title": "x", "cells": ["print(1)"]}, "cells[0] must be an object"),
    ({"title": "x", "cells": [{"cell_type": "raw", "source": "x"}]}, "cells[0].cell_type"),
    ({"title": "x", "cells": [{"cell_type": "code", "source": 1}]}, "cells[0].source must be"),
    ({"title": "x", "cells": [{"cell_type": "markdown", "source": "m"}]}, "no code cell"),
    ({"title": "x", "cells": CELLS, "language": "cobol"}, "unknown language 'cobol'"),
    ({"title": "x", "cells": CELLS, "id": "../evil"}, "id '../evil'"),
    ({"title": "x", "cells": CELLS, "id": "Has Space"}, "id 'Has Space'"),
    ({"title": "x", "cells": CELLS, "tags": "a, b"}, "tags must be a list of strings"),
    ({"title": "x", "cells": CELLS, "tags": ["ok", "no/slash"]}, "tag 'no/slash'"),
    ({"title": "x", "cells": CELLS, "requires": ["not a module"]}, "requires 'not a module'"),
    ({"title": "x" * 121, "cells": CELLS}, "longer than 120"),
    ({"title": "two\nlines", "cells": CELLS}, "title must be a single line"),
    ({"title": "x", "cells": CELLS, "source": "site"}, "unknown field(s): source"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES, ids=[m for _, m in BAD_BODIES])
def test_post_validation(api: Api, user_dir: Path, body: Any, message: str) -> None:
    status, reply = api("POST", "snippets", body=body if body != "" else b"")
    assert status == 400
    assert reply["status"] == 400 and message in reply["message"], reply
    assert not user_dir.exists() or not list(user_dir.iterdir())


def test_post_saves_a_user_snippet_on_the_drive(api: Api, user_dir: Path) -> None:
    body = {"title": "My loader", "tags": ["data"], "cells": CELLS}
    status, saved = api("POST", "snippets", body=body)
    assert status == 201
    assert (saved["id"], saved["source"], saved["category"]) == ("my-loader", "user", "My snippets")
    assert saved["cells"] == CELLS
    assert parse((user_dir / "my-loader.md").read_text(), "my-loader", "user").to_json() == saved
    assert by_id(api("GET", "snippets")[1])["my-loader"] == saved

    # the same title again gets a new id; nothing is overwritten unless the id is named
    status, again = api("POST", "snippets", body=body)
    assert (status, again["id"]) == (201, "my-loader-2")
    body_lines = {"title": "Renamed", "id": "my-loader", "cells": [
        {"cell_type": "code", "source": ["x = 1\n", "print(x)"]},  # nbformat's list form
    ]}  # fmt: skip
    status, replaced = api("POST", "snippets", body=body_lines)
    assert status == 201 and replaced["cells"][0]["source"] == "x = 1\nprint(x)"
    assert api("GET", "snippets/my-loader")[1]["title"] == "Renamed"


def test_post_with_a_builtin_id_replaces_it_for_this_user(api: Api) -> None:
    body = {"id": "nvidia-smi", "title": "Mine", "cells": CELLS}
    assert api("POST", "snippets", body=body)[0] == 201
    assert api("GET", "snippets/nvidia-smi")[1]["source"] == "user"
    assert api("DELETE", "snippets/nvidia-smi")[0] == 204  # brings the built-in back
    assert api("GET", "snippets/nvidia-smi")[1]["source"] == "builtin"


def test_delete_rules(api: Api, site_dir: Path, user_dir: Path) -> None:
    (site_dir / "team.md").write_text(GOOD.format(title="Team"))
    status, saved = api("POST", "snippets", body={"title": "Temp", "cells": CELLS})
    user_dir.joinpath("broken.md").write_text("no front matter")

    assert api("DELETE", f"snippets/{saved['id']}")[0] == 204
    assert not (user_dir / f"{saved['id']}.md").exists()
    assert api("GET", f"snippets/{saved['id']}")[0] == 404

    status, reply = api("DELETE", "snippets/pandas-csv")
    assert (status, reply["status"]) == (403, 403) and "built in" in reply["message"]
    status, reply = api("DELETE", "snippets/team")
    assert status == 403 and "site snippet" in reply["message"]
    assert (site_dir / "team.md").exists()
    assert api("DELETE", "snippets/never-saved")[0] == 404
    assert api("DELETE", "snippets/broken")[0] == 204  # a broken file can be cleaned up
    assert api("GET", "snippets")[1]["problems"] == []
    assert api("DELETE", "snippets")[0] == 405


@pytest.mark.parametrize("auth", ["", "token wrong-token"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "snippets"), ("GET", "snippets/pandas-csv"), ("POST", "snippets"),
     ("DELETE", "snippets/pandas-csv")],
)  # fmt: skip
def test_unauthenticated_requests_are_refused(
    api: Api, user_dir: Path, auth: str, method: str, path: str
) -> None:
    body = {"title": "x", "cells": CELLS} if method == "POST" else None
    status, _ = api(method, path, body=body, headers={"Authorization": auth})
    assert status in (401, 403)
    assert not user_dir.exists()


@pytest.mark.parametrize(
    "cells",
    [
        [Cell("code", "print(1)")],
        [Cell("markdown", "one"), Cell("markdown", "two"), Cell("code", "x = 1\n\n")],
        [Cell("markdown", "see:\n```python\nnot a cell\n```"), Cell("code", "s = '''\n```\n'''")],
        [Cell("code", "````python\n```"), Cell("markdown", "```text\nplain\n```")],
    ],
)
def test_dump_then_parse_gives_the_snippet_back(cells: list[Cell]) -> None:
    snippet = Snippet(
        id="round-trip",
        title=' "quoted" title ',
        description="[not a list], 100% fine",
        tags=["a b", "c.d"],
        category="x",
        requires=["PIL", "sklearn.pipeline"],
        cells=cells,
    )
    assert parse(dump(snippet), "round-trip").to_json() == snippet.to_json()


def test_text_and_fences_become_cells() -> None:
    text = (
        "---\n# a comment\ntitle: 'T'\ntags: [ \"x y\" , 'z' ]\n---\n\nIntro\n\n"
        "```bash\necho stays in the text\n```\n```python\na = 1\n```\n\n"
        "```markdown\n# verbatim\n```\n````python\nb = '```'\n````\n"
    )
    snippet = parse(text, "t")
    assert (snippet.title, snippet.tags, snippet.category) == ("T", ["x y", "z"], "General")
    assert [(c.cell_type, c.source) for c in snippet.cells] == [
        ("markdown", "Intro\n\n```bash\necho stays in the text\n```"),
        ("code", "a = 1"),
        ("markdown", "# verbatim"),
        ("code", "b = '```'"),
    ]
    with pytest.raises(SnippetError, match="no code cell"):
        parse("---\ntitle: x\n---\n```bash\nls\n```\n", "t")


def cpu_image_modules() -> set[str]:
    """The modules the CPU image provides: images/common/packages.txt's import names."""
    text = (ROOT / "images/common/packages.txt").read_text()
    lines = re.findall(r"^([A-Za-z0-9][\w.-]*)==\S+(?:\s*#\s*import:\s*(\S+))?", text, re.M)
    return {module or name.replace("-", "_") for name, module in lines}


def test_builtin_library() -> None:
    assert len(BUILTINS) >= 22
    assert {s.id for s in BUILTINS if NETWORK_TAG in s.tags} == NEEDS_NETWORK
    assert len(RUN_HERE) + len(CPU_IMAGE_ONLY) + len(NEEDS_NETWORK) == len(BUILTINS)
    assert len(RUN_HERE) >= 10  # the division must not drift into "nothing runs here"


@pytest.mark.parametrize("snippet", RUN_HERE, ids=[s.id for s in RUN_HERE])
def test_builtin_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    # a snippet that imports anything the test venv lacks without declaring it fails here
    outcome = run_snippet(snippet, tmp_path / "drive", timeout=120)
    assert outcome.ok, outcome.output


@pytest.mark.parametrize("snippet", CPU_IMAGE_ONLY, ids=[s.id for s in CPU_IMAGE_ONLY])
def test_builtin_snippet_declares_what_the_cpu_image_provides(snippet: Snippet) -> None:
    # not run here: its `requires` names modules this venv lacks; the CPU image's tests
    # run it with `kernelhub-snippets-check`, so the image must have them (the ones this
    # venv has come with the notebook server, which the image has too)
    missing = missing_requirements(snippet)
    assert missing and set(missing) <= set(snippet.requires)
    assert set(missing) <= cpu_image_modules()


# --- the frontend: snippets/src, a Notebook 7 / JupyterLab 4 extension ------------------

SNIPPETS = ROOT / "snippets"
LABEXTENSION = "share/jupyter/labextensions/@kernelhub/snippets"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# what `jupyter labextension list` and `jupyter server extension list` say of an
# extension installed, enabled and loadable
LABEXTENSION_OK = re.compile(r"@kernelhub/snippets v0\.1\.0 enabled OK")
SERVER_EXTENSION_OK = re.compile(
    r"kernelhub_snippets enabled\s.*kernelhub_snippets 0\.1\.0 OK", re.S
)


def with_venv_on_path() -> dict[str, str]:
    """This environment, with this Python's bin/ (jupyter, jupyter-builder) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def extension_lists(command: list[str], **kwargs: Any) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, **kwargs
    )
    return ANSI.sub("", done.stdout + done.stderr)


def test_frontend_unit_tests_pass() -> None:
    # jest (`npm test`, set up by scripts/dev): fuzzy search and ranking, snippet to
    # cells and back, grouping by category, the API client's errors
    if not (SNIPPETS / "node_modules" / ".bin" / "jest").exists():
        pytest.fail("the frontend's npm packages are missing: run scripts/dev", pytrace=False)
    done = subprocess.run(
        ["npm", "test", "--silent"],
        cwd=SNIPPETS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    summary = re.search(r"Tests:\s+(\d+) passed, (\d+) total", report)
    assert summary and summary.group(1) == summary.group(2), report[-2000:]


def build_wheel(dest: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """snippets/scripts/build-wheel DEST, with the dev virtualenv's tools."""
    return subprocess.run(
        [str(SNIPPETS / "scripts" / "build-wheel"), str(dest)],
        env={**with_venv_on_path(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_wheel_ships_the_prebuilt_frontend_and_enables_both_parts(tmp_path: Path) -> None:
    build = build_wheel(tmp_path, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    [wheel] = tmp_path.glob("kernelhub_snippets-*.whl")
    data = f"kernelhub_snippets-{kernelhub_snippets.__version__}.data/data"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        package = json.loads(archive.read(f"{data}/{LABEXTENSION}/package.json"))
        install = json.loads(archive.read(f"{data}/{LABEXTENSION}/install.json"))
        server = json.loads(
            archive.read(f"{data}/etc/jupyter/jupyter_server_config.d/kernelhub_snippets.json")
        )
        texts = [archive.read(name) for name in names]
    assert package["name"] == "@kernelhub/snippets"
    entry = package["jupyterlab"]["_build"]["load"]  # the built remote entry
    assert f"{data}/{LABEXTENSION}/{entry}" in names
    assert f"{data}/{LABEXTENSION}/static/style.js" in names
    assert install["packageName"] == "kernelhub-snippets"
    assert server == {"ServerApp": {"jpserver_extensions": {"kernelhub_snippets": True}}}
    # built in any checkout, the same bytes: nothing names the folder it was built in
    assert not [t for t in texts if str(ROOT).encode() in t]
    # and a second build with nothing changed does nothing
    again = build_wheel(tmp_path, timeout=60)
    assert again.returncode == 0 and again.stderr == ""
    assert [p.name for p in tmp_path.glob("*.whl")] == [wheel.name]


def test_the_dev_virtualenv_serves_the_frontend_and_the_server_extension() -> None:
    # local runtimes run this environment's server (scripts/dev links the frontend in)
    listed = extension_lists(["jupyter", "labextension", "list"], env=with_venv_on_path())
    assert LABEXTENSION_OK.search(listed), listed
    listed = extension_lists(["jupyter", "server", "extension", "list"], env=with_venv_on_path())
    assert SERVER_EXTENSION_OK.search(listed), listed


def current_runtime_image(name: str) -> str | None:
    """The tag of runtime image NAME if the engine has it built from these sources."""
    try:
        engine = img.engine()
        want = img.wanted_hash(engine, img.plan_build(ROOT / "images", name))
    except img.ImageError:
        return None
    image = find_image(engine, img.runtime_tag(name))
    if image is None or image.labels.get(img.SOURCE_HASH_LABEL) != want:
        return None
    return img.runtime_tag(name)


# scripts/dev test builds both (the CPU image is the ML stack users start); the GPU
# image installs the wheel in the same last layer, and needs a GPU host to be worth
# building (tensorflow[and-cuda]), so it is not built for the tests
@pytest.mark.docker
@pytest.mark.parametrize("name", ["test", "cpu"])
def test_runtime_image_has_both_parts_enabled(name: str) -> None:
    tag = current_runtime_image(name)
    if tag is None:
        pytest.fail(
            f"{img.runtime_tag(name)} is missing or out of date: `kernelhub images build {name}`",
            pytrace=False,
        )
    command = "jupyter labextension list 2>&1; jupyter server extension list 2>&1"
    try:
        output = docker.from_env().containers.run(tag, ["sh", "-c", command], remove=True)
    except docker.errors.ContainerError as e:
        pytest.fail(f"listing the extensions in {tag} failed: {e}", pytrace=False)
    listed = ANSI.sub("", output.decode())
    assert LABEXTENSION_OK.search(listed), listed
    assert "(python, kernelhub-snippets)" in listed, listed  # installed by the wheel
    assert SERVER_EXTENSION_OK.search(listed), listed
