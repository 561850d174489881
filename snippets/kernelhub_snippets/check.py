"""Run snippets' code cells the way a notebook would: `kernelhub-snippets-check`.

Each snippet runs in a fresh Python process (IPython's shell, so `%magics` and `!shell`
lines work) in a scratch working directory, as a new user's notebook on an empty drive
would. The tests run the built-in snippets whose `requires` the test environment has;
the CPU image's tests run all of them, there, with this same command. Snippets tagged
`network` are left out: runtimes may have no internet.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kernelhub_snippets.fileformat import Snippet
from kernelhub_snippets.library import BUILTIN_DIR, read_dir

NETWORK_TAG = "network"
DEFAULT_TIMEOUT = 300.0  # the Keras and TensorBoard snippets start TensorFlow

# Runs in the child: every code cell in order, stopping at the first error, like
# "Run all". Matplotlib draws off-screen; display() of rich output prints its repr.
RUNNER = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance(colors="nocolor")
for n, cell in enumerate(json.load(sys.stdin)):
    result = shell.run_cell(cell, store_history=True)
    if not result.success:
        print(f"\n[kernelhub-snippets-check] cell {n} failed", file=sys.stderr)
        sys.exit(1)
"""


@dataclass
class Outcome:
    snippet_id: str
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def builtin_snippets() -> list[Snippet]:
    snippets, problems = read_dir(BUILTIN_DIR, "builtin")
    if problems:  # a broken built-in is a packaging bug, not a user's typo
        raise RuntimeError("; ".join(f"{p.path}: {p.reason}" for p in problems))
    return snippets


def runnable(snippets: list[Snippet]) -> list[Snippet]:
    """The snippets that need no network."""
    return [snippet for snippet in snippets if NETWORK_TAG not in snippet.tags]


def missing_requirements(snippet: Snippet) -> list[str]:
    """The modules in `requires` that this Python cannot import."""
    missing = []
    for module in snippet.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def run_snippet(
    snippet: Snippet, workdir: Path, python: str = sys.executable, timeout: float = DEFAULT_TIMEOUT
) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
    # the interpreter's scripts first, as in a kernel (`%tensorboard` looks for its binary)
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    # its own process group, so that what a snippet starts (TensorBoard) ends with it
    process = subprocess.Popen(
        [python, "-c", RUNNER],
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(json.dumps(snippet.code()), timeout=timeout)
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[kernelhub-snippets-check] timed out after {timeout:.0f} s"
        returncode = -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return Outcome(snippet.id, returncode, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="snippet ids (default: all built-in ones)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument(
        "--available-only",
        action="store_true",
        help="leave out snippets whose `requires` this Python lacks (default: they fail)",
    )
    args = parser.parse_args(argv)
    snippets = runnable(builtin_snippets())
    if args.ids:
        unknown = set(args.ids) - {s.id for s in snippets}
        if unknown:
            parser.error(f"no runnable built-in snippet(s): {', '.join(sorted(unknown))}")
        snippets = [s for s in snippets if s.id in args.ids]
    failed = ran = 0
    with tempfile.TemporaryDirectory(prefix="kernelhub-snippets-") as scratch:
        for snippet in snippets:
            missing = missing_requirements(snippet)
            if missing and args.available_only:
                print(f"-- {snippet.id}: not run, needs {', '.join(missing)}")
                continue
            outcome = run_snippet(snippet, Path(scratch) / snippet.id, timeout=args.timeout)
            ran += 1
            print(f"{'ok' if outcome.ok else 'FAILED'} {snippet.id}")
            if not outcome.ok:
                failed += 1
                print(outcome.output.rstrip(), end="\n\n")
    print(f"{ran - failed} of {ran} ran cleanly; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
