"""cProfile inside a running hub (hub_load.py --profile): the hook, its signals, the stats.

The hub's environment gets a sitecustomize that starts cProfile on PROFILE_START
and writes the stats on PROFILE_DUMP; profile_lines prints the stats written.
"""

from __future__ import annotations

import signal
from pathlib import Path

PROFILE_ENV = "KH_BENCH_PROFILE"
# JupyterHub takes SIGUSR1 (it logs its status): two real-time signals instead
PROFILE_START, PROFILE_DUMP = signal.SIGRTMIN + 3, signal.SIGRTMIN + 4
# the hub's sitecustomize under --profile: PROFILE_START starts cProfile, PROFILE_DUMP
# stops it and writes the stats (renamed into place when whole); only the process
# started with the variable (not its children)
PROFILE_HOOK = f"""
import cProfile, os, signal
_path = os.environ.pop({PROFILE_ENV!r}, None)
if _path:
    _profile = cProfile.Profile()
    def _dump(*_):
        _profile.disable()
        _profile.dump_stats(_path + ".part")
        os.rename(_path + ".part", _path)
    signal.signal({int(PROFILE_START)}, lambda *_: _profile.enable())
    signal.signal({int(PROFILE_DUMP)}, _dump)
"""


def profile_env(workdir: Path, name: str) -> dict[str, str]:
    """The environment that has the hub profile itself (PROFILE_HOOK) into NAME.prof."""
    hook = workdir / "profile-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(PROFILE_HOOK)
    return {"PYTHONPATH": str(hook), PROFILE_ENV: str(workdir / f"{name}.prof")}


def profile_lines(path: Path, name: str, top: int = 30) -> list[str]:
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"kernelhub|jupyterhub", top)
    return [
        f"cProfile of the {name} hub over the window (own time, then cumulative):",
        text.getvalue(),
    ]
