"""What the processes under load use: CPU and RSS from /proc, quota daemon cycles, runtimes' memory.

hub_load.py's readings of the hub, the proxy, the quota daemon and the idle
runtimes (a local runtime's processes, a container's `docker stats` memory).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
from pathlib import Path

import docker
import httpx
from hubs import Failed
from load_sides import REQUEST_TIMEOUT, LoadSide

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import runtime_pids

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float]:
    """(parent PID, CPU seconds user+system) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child_pid(parent: int, marker: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if proc_stat(int(entry.name))[0] == parent and marker in proc_cmdline(entry):
                return int(entry.name)
    return None


def proc_cmdline(entry: Path) -> str:
    return (entry / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")


async def quotad_cycles(side: LoadSide, port: int, token: str) -> float:
    """Cycles the quota daemon has run, from its /metrics (the cycle histogram's count)."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        answer = await client.get(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"token {token}"}
        )
    if answer.status_code != 200:
        raise Failed(f"the quota daemon's /metrics: HTTP {answer.status_code}")
    match = re.search(r"^kernelhub_quotad_cycle_seconds_count (\S+)$", answer.text, re.M)
    if not match:
        raise Failed("the quota daemon's /metrics has no cycle count")
    return float(match.group(1))


def runtime_memory(side: LoadSide, users: list[str]) -> dict[str, float]:
    """Median MiB of an idle runtime: local process RSS (server, whole sandbox) or container."""
    if side.kind == "docker":
        engine = docker.from_env(timeout=60)
        try:
            used, anon = [], []
            for user in users:
                stats = engine.containers.get(side.container_name(user)).stats(stream=False)
                memory = stats["memory_stats"]
                counts = memory.get("stats", {})  # cgroup v2 names, else v1's
                inactive = counts.get("total_inactive_file", counts.get("inactive_file", 0))
                used.append((memory["usage"] - inactive) / 2**20)  # as `docker stats` shows
                anon.append(counts.get("anon", counts.get("total_rss", counts.get("rss", 0))))
        finally:
            engine.close()
        return {
            "container (docker stats)": statistics.median(used),
            "container anonymous (rss)": statistics.median(anon) / 2**20,
        }
    server, sandbox = [], []
    for user in users:
        pids = runtime_pids(side.hub.data_dir, user)
        everything = runtime_pids(side.hub.data_dir, user, with_sandbox=True)
        server.append(sum(rss_mib(p) for p in pids))
        sandbox.append(sum(rss_mib(p) for p in everything))
    memory = {"server process RSS": statistics.median(server)}
    if sandbox != server:
        memory["server + sandbox processes RSS"] = statistics.median(sandbox)
    return memory
