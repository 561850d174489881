"""Swarm runtime spawns: N at once on one node vs spread over three nodes, in one run.

    .venv/bin/python benchmarks/swarm_spawn.py [--concurrent 30] [--bursts 1]

One run builds a real three-node swarm (tests/swarm_cluster.py: the host's engine is
the manager, two worker engines run in containers, the runtime image is pushed to the
cluster's registry and pulled on every worker first, and a host folder mounted on every
node at the same path stands for the drives' shared filesystem), starts one real
`kernelhub up --runtimes swarm` (SwarmRuntimeSpawner, drive_root on that folder; no
quota daemon: benchmarks/quotad.py measures it) and drives it as benchmarks/spawn.py
does, through the REST API with each user's own token; a runtime is ready when
`GET /user/U/api/status` answers 200 through the proxy (polled every 0.5 s per user).

  burst A, 1 node    every node but one (--one-node, the manager by default) is
                     drained (`docker node update --availability drain`, what an
                     operator does to a node), so Swarm's scheduler has exactly one
                     node to place tasks on. The hub, its configuration and the
                     services it creates are the same as in burst B: only the
                     cluster's capacity differs, and the benchmark checks that every
                     task did run on that node. --concurrent new users POST at once;
                     wall = first POST until every runtime answers api/status.
  burst B, 3 nodes   every node active again; --concurrent other new users, timed the
                     same way; Swarm spreads the tasks (the per-node counts are shown).

After each burst every server is stopped (DELETE) and the burst ends when the hub lists
none and no service or task container of the run is left on any node. Before the first
burst, --warmup uncounted runtimes start at once on the full cluster (Swarm spreads
them: each node has started the image once). With --bursts > 1, A and B alternate and
medians are reported.

It prints both walls, the ratio B/A, p50/p95 of the per-user ready times, the per-node
counts, and the machine. All three "nodes" share this machine's cores, so spreading
adds no CPU here: the ratio shows what the cluster itself costs or gains (parallel
engines, scheduling, the nodes' network), not what separate machines would add.

Everything is removed at the end, also on failure or Ctrl-C: the hub is stopped
(SIGINT, killed if it lingers), the swarm harness tears the cluster down (services,
workers, registry, network, the shared folder; the host leaves the swarm), and what
the run left on the host's engine goes. Only one swarm exists on a host at a time: if
another run holds the harness's lock, this one waits for it. Tokens are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
from hubs import (
    Failed,
    Side,
    log,
    remove_docker_objects,
    running,
    spawn_until_ready,
    terminate_on_sigterm,
)
from measure import percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # hubs.py does too

from harness import HubProcess, free_port, write_test_credentials
from swarm_cluster import Cluster, SwarmClusterError, swarm_cluster

from kernelhub.contract import USER_LABEL

IMAGE = "kernelhub/runtime-test:latest"
CLUSTER_PREFIX = "khswb"
WORKERS = 2
SPAWN_TIMEOUT = 300.0  # c.Spawner.start_timeout / http_timeout: N spawns share 2 cores
BURST_TIMEOUT = 600.0  # first POST until every runtime of a burst answers
STOP_TIMEOUT = 180.0  # DELETEs until no service or container of the burst is left
# api/status per user, and the stop checks: 30 users polling every 0.1 s would load the
# hub and proxy with 300 requests/s on the cores the runtimes start on (it slowed them)
POLL_INTERVAL = 0.5


def hub_config(cluster: Cluster, run_prefix: str, mem: str, cpus: float) -> str:
    return f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{cluster.image(IMAGE)}",
      "mem_limit": "{mem}", "cpu_limit": {cpus}}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
c.GpuInventory.use_nvml = False
c.SwarmRuntimeSpawner.prefix = "{run_prefix}"
c.SwarmRuntimeSpawner.drive_name_template = "{run_prefix}-drive-{{username}}"
c.SwarmRuntimeSpawner.site_snippets_volume = ""
# drives on the cluster's shared folder (mounted at this path on every node): with
# node-local drives every runtime would be pinned to the drives' node
c.SwarmRuntimeSpawner.drive_root = "{cluster.shared_dir}"
c.Spawner.start_timeout = {int(SPAWN_TIMEOUT)}
c.Spawner.http_timeout = {int(SPAWN_TIMEOUT)}
"""


@dataclass
class Burst:
    wall: float
    ready: list[float]  # each user's seconds from the first POST until api/status 200
    nodes: dict[str, list[float]]  # node hostname -> ready times of the runtimes it ran
    stop: float  # seconds from the DELETEs until nothing of the burst is left


@dataclass
class Results:
    one_node: list[Burst] = field(default_factory=list)
    spread: list[Burst] = field(default_factory=list)


# ---------------------------------------------------------------- the cluster


def set_active_nodes(cluster: Cluster, active: list[str]) -> None:
    """Drain every node but ``active``; make those active."""
    for name in cluster.node_names:
        cluster.set_availability(name, "active" if name in active else "drain")
    nodes = {
        n.attrs["Description"]["Hostname"]: n.attrs["Spec"] for n in cluster.manager.nodes.list()
    }
    wrong = [
        n for n in cluster.node_names if (nodes[n]["Availability"] == "active") != (n in active)
    ]
    if wrong:
        raise Failed(f"node availability did not change on {', '.join(wrong)}")


def runtime_nodes(cluster: Cluster, run_prefix: str) -> dict[str, str]:
    """User -> hostname of the node running that user's runtime task."""
    hostnames = {n.id: n.attrs["Description"]["Hostname"] for n in cluster.manager.nodes.list()}
    users = {
        s.id: s.attrs["Spec"].get("Labels", {}).get(USER_LABEL, s.name)
        for s in cluster.manager.services.list(filters={"name": run_prefix})
    }
    tasks = cluster.manager.api.tasks(filters={"desired-state": "running"})
    return {
        users[t["ServiceID"]]: hostnames.get(t.get("NodeID", ""), "?")
        for t in tasks
        if t["ServiceID"] in users
    }


def leftovers(cluster: Cluster, run_prefix: str) -> list[str]:
    """This run's services, and task containers on any node (running or not)."""
    left = [s.name for s in cluster.manager.services.list(filters={"name": run_prefix})]
    engines = [cluster.manager, *(cluster.worker_client(w.index) for w in cluster.workers)]
    for engine in engines:  # the plain list: a container may go while the SDK inspects it
        for container in engine.api.containers(all=True, filters={"name": run_prefix}):
            left += [name.lstrip("/") for name in container["Names"]]
    return left


# ---------------------------------------------------------------- one burst


async def stop_all(
    client: httpx.AsyncClient, side: Side, users: list[str], cluster: Cluster, run_prefix: str
) -> float:
    """DELETE every user's server; seconds until the hub lists none and nothing is left."""
    t0 = time.monotonic()
    deletes = await asyncio.gather(
        *(client.delete(f"/hub/api/users/{u}/server", headers=side.headers(u)) for u in users)
    )
    for user, response in zip(users, deletes, strict=True):
        if response.status_code not in (202, 204):
            raise Failed(f"stop of {user}: HTTP {response.status_code} {response.text[:300]}")
    while time.monotonic() - t0 < STOP_TIMEOUT:
        side.check_alive()
        models = await asyncio.gather(
            *(client.get(f"/hub/api/users/{u}", headers=side.headers(u)) for u in users)
        )
        listed = [u for u, m in zip(users, models, strict=True) if m.json().get("servers")]
        left = [] if listed else await asyncio.to_thread(leftovers, cluster, run_prefix)
        if not listed and not left:
            return time.monotonic() - t0
        await asyncio.sleep(POLL_INTERVAL)
    raise Failed(f"servers or services still there {STOP_TIMEOUT:.0f}s after the DELETEs")


async def burst(
    client: httpx.AsyncClient, side: Side, users: list[str], cluster: Cluster, run_prefix: str
) -> Burst:
    for user in users:
        side.headers(user)  # tokens first, outside the clock
    t0 = time.monotonic()
    spawns = [spawn_until_ready(client, side, u, t0, POLL_INTERVAL, BURST_TIMEOUT) for u in users]
    results = await asyncio.gather(*spawns, return_exceptions=True)
    answered = [float(r) - t0 for r in results if not isinstance(r, BaseException)]
    log(f"{len(answered)} of {len(users)} ready, the last after {max(answered, default=0):.2f}s")
    placed = await asyncio.to_thread(runtime_nodes, cluster, run_prefix)
    stopped = await stop_all(client, side, users, cluster, run_prefix)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    ready_at = {u: float(r) - t0 for u, r in zip(users, results, strict=True)}  # type: ignore[arg-type]
    nodes: dict[str, list[float]] = {}
    for user, seconds in sorted(ready_at.items(), key=lambda item: item[1]):
        nodes.setdefault(placed.get(user, "(no running task)"), []).append(seconds)
    ready = sorted(ready_at.values())
    return Burst(wall=ready[-1], ready=ready, nodes=dict(sorted(nodes.items())), stop=stopped)


def per_node(result: Burst) -> str:
    """Each node's runtimes: how many, and when the first and the last answered."""
    return ", ".join(
        f"{node} {len(times)} ({times[0]:.1f}-{times[-1]:.1f}s)"
        for node, times in result.nodes.items()
    )


async def measure(
    side: Side, cluster: Cluster, run_prefix: str, one_node: str, args: argparse.Namespace
) -> Results:
    results = Results()
    limits = httpx.Limits(max_connections=4 * args.concurrent + 8)
    async with httpx.AsyncClient(base_url=side.hub.url, timeout=30, limits=limits) as client:
        if args.warmup:
            await asyncio.to_thread(set_active_nodes, cluster, cluster.node_names)
            users = [f"warm{i}" for i in range(args.warmup)]
            warm = await burst(client, side, users, cluster, run_prefix)
            log(f"warm-up: {args.warmup} at once, {per_node(warm)} (not counted)")
        for b in range(args.bursts):
            for kind, active in (("one_node", [one_node]), ("spread", cluster.node_names)):
                await asyncio.to_thread(set_active_nodes, cluster, active)
                users = [f"b{b}{kind[0]}{i}" for i in range(args.concurrent)]
                result = await burst(client, side, users, cluster, run_prefix)
                if kind == "one_node" and set(result.nodes) != {one_node}:
                    raise Failed(f"burst A ran beyond {one_node}: {per_node(result)}")
                getattr(results, kind).append(result)
                log(
                    f"burst {b + 1} {kind}: wall {result.wall:.2f}s, stop {result.stop:.2f}s, "
                    f"per node {per_node(result)}; ready after "
                    + " ".join(f"{r:.1f}" for r in result.ready)
                )
        await asyncio.to_thread(set_active_nodes, cluster, cluster.node_names)
    return results


# ---------------------------------------------------------------- report


def report(
    results: Results,
    cluster: Cluster,
    one_node: str,
    drivers: dict[str, str],
    args: argparse.Namespace,
) -> list[str]:
    med = statistics.median
    a, b = results.one_node, results.spread
    ready_a = [r for x in a for r in x.ready]
    ready_b = [r for x in b for r in x.ready]
    bursts = f", median of {args.bursts}" if args.bursts > 1 else ""
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    rows = [
        (
            f"wall: first POST -> all {args.concurrent} answer{bursts}",
            med(x.wall for x in a),
            med(x.wall for x in b),
        ),
        (
            f"per-user ready p50 (n={len(ready_a)})",
            percentile(ready_a, 50),
            percentile(ready_b, 50),
        ),
        (
            f"per-user ready p95 (n={len(ready_a)})",
            percentile(ready_a, 95),
            percentile(ready_b, 95),
        ),
        (f"stop all until nothing left{bursts}", med(x.stop for x in a), med(x.stop for x in b)),
    ]
    nodes = ", ".join(f"{n} ({drivers.get(n, '?')})" for n in cluster.node_names)
    out = [
        f"Swarm runtime spawns, {args.concurrent} at once: 1 node (A) vs spread over "
        f"{len(cluster.node_names)} nodes (B), one kernelhub hub (--runtimes swarm)",
        f"machine: {socket.gethostname()}, {cores} CPU cores, {memory:.1f} GiB; nodes (storage "
        f"driver): {nodes}",
        f"all {len(cluster.node_names)} nodes share these {cores} cores: spreading adds no CPU "
        "here, so B/A is the cluster's own overhead/benefit (parallel engines), not more hardware",
        f"image {IMAGE} from the cluster registry, {args.mem}/{args.cpus:g} CPU limit each; "
        f"A: every node but {one_node} drained; seconds",
        f"  {'':<44}{'A 1 node':>10}{'B spread':>10}{'B/A':>7}",
    ]
    for label, one, spread in rows:
        out.append(f"  {label:<44}{one:>10.2f}{spread:>10.2f}{spread / one:>7.2f}")
    for name, bursts_of in (("A", a), ("B", b)):
        walls = " ".join(f"{x.wall:.2f}" for x in bursts_of)
        nodes = "; ".join(per_node(x) for x in bursts_of)
        out.append(f"  {name} walls: {walls}; runtimes per node (first-last ready): {nodes}")
    ratio = med(x.wall for x in b) / med(x.wall for x in a)
    out.append(f"ratio B/A (spread wall / one-node wall): {ratio:.2f}")
    return out


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=30, help="users spawning at once")
    parser.add_argument("--bursts", type=int, default=1, help="A/B burst pairs (medians)")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted spawns first (spread)")
    parser.add_argument("--mem", default="256M", help="each runtime's memory limit")
    parser.add_argument("--cpus", type=float, default=1.0, help="each runtime's CPU limit")
    parser.add_argument(
        "--one-node",
        default="manager",
        choices=["manager", *(f"worker-{n}" for n in range(1, WORKERS + 1))],
        help="the node burst A runs on (the others are drained)",
    )
    args = parser.parse_args()
    for name in ("concurrent", "bursts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0 or args.cpus <= 0:
        parser.error("--warmup must be 0 or more, --cpus more than 0")
    return args


def storage_drivers(cluster: Cluster) -> dict[str, str]:
    drivers = {cluster.manager_name: str(cluster.manager.info()["Driver"])}
    for worker in cluster.workers:
        drivers[worker.name] = str(cluster.worker_client(worker.index).info()["Driver"])
    return drivers


def run(args: argparse.Namespace, workdir: Path, run_prefix: str, started: float) -> list[str]:
    with swarm_cluster(
        CLUSTER_PREFIX, workers=WORKERS, images=[IMAGE], prepull=True, shared_dir=True
    ) as cluster:
        ready, built = time.monotonic(), sum(cluster.timings.values())
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in cluster.timings.items())
        log(f"swarm of {len(cluster.node_names)} nodes ready ({steps}); run prefix {run_prefix}")
        one_node = cluster.manager_name
        if args.one_node != "manager":
            one_node = f"{CLUSTER_PREFIX}-{args.one_node}"
        data_dir = workdir / "data"
        write_test_credentials(data_dir, secrets.token_urlsafe(18))
        hub = HubProcess(
            data_dir=data_dir,
            port=free_port(),
            config_text=hub_config(cluster, run_prefix, args.mem, args.cpus),
            runtimes="swarm",
            env={"KERNELHUB_QUOTAS": "0"},
        )
        try:  # running() stops the hub before the swarm goes: it removes its services
            with running(Side("kernelhub", hub, run_prefix, {"runtime": "cpu"})) as side:
                results = asyncio.run(measure(side, cluster, run_prefix, one_node, args))
                lines = report(results, cluster, one_node, storage_drivers(cluster), args)
        except Failed:
            log(f"----- the cluster -----\n{cluster.logs(tail=0)[-6000:]}")
            raise
    done, teardown = time.monotonic(), cluster.timings.get("teardown", 0.0)
    lines.append(
        f"run time {done - started:.0f}s: swarm set-up {ready - started:.0f}s (building it "
        f"{built:.0f}s, the rest waiting for another run's swarm), hub and bursts "
        f"{done - teardown - ready:.0f}s, teardown {teardown:.0f}s"
    )
    return lines


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    started = time.monotonic()
    run_prefix = f"{CLUSTER_PREFIX}{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="kernelhub-swarm-bench-"))
    try:
        lines = run(args, workdir, run_prefix, started)
    except (Failed, SwarmClusterError) as e:
        log(f"swarm spawn benchmark failed: {e}")
        sys.exit(1)
    finally:
        engine = docker.from_env(timeout=60)
        try:  # the drives and task containers the swarm left on the host's engine
            with contextlib.suppress(docker.errors.DockerException):
                remove_docker_objects(engine, run_prefix)
        finally:
            engine.close()
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
