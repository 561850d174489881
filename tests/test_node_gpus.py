"""Specification of GPUs across cluster nodes: which node has which GPU, who holds each.

A runtime on a cluster runs on one node, so all of its GPUs come from that node
(a placement); no (node, GPU) is ever held by two runtimes unless their type shares
GPUs; and what was held survives a hub restart through the spawner's state.
"""

import asyncio
import logging
import random

import pytest
from traitlets import TraitError
from traitlets.config import Config

from kernelhub.runtimes.catalog import RuntimeCatalog
from kernelhub.runtimes.gpus import GpuDevice, GpuInventory, NoFreeGpu
from kernelhub.runtimes.node_gpus import Placement, placement_from_state, placement_state
from kernelhub.runtimes.types import RuntimeRequestError

TWO_BY_TWO = {"node-a": ["0", "1"], "node-b": ["0", "1"]}


def cluster(nodes=None, **traits) -> GpuInventory:
    gpus = GpuInventory(nodes=TWO_BY_TWO if nodes is None else nodes, **traits)
    gpus.load()
    return gpus


@pytest.fixture
def singletons():
    """The process-wide inventory and catalog, as the hub and every spawner reach them."""
    GpuInventory.clear_instance()
    RuntimeCatalog.clear_instance()
    yield
    GpuInventory.clear_instance()
    RuntimeCatalog.clear_instance()


# --- configuration ---------------------------------------------------------------

BAD_NODES = {  # case -> (GpuInventory.nodes, fragment of the error)
    "not-a-dict": (["node-a"], "expected a dict"),
    "empty-node-name": ({"": ["0"]}, "node names must be non-empty strings, got ''"),
    "non-string-node-name": ({7: ["0"]}, "node names must be non-empty strings, got 7"),
    "slash-in-node-name": ({"a/b": ["0"]}, "node name 'a/b' must be a hostname"),
    "space-in-node-name": ({"node a": ["0"]}, "node name 'node a' must be a hostname"),
    "ids-a-string": ({"node-a": "01"}, "node 'node-a': GPU ids must be a list of strings, not str"),
    "ids-null": (
        {"node-a": None},
        "node 'node-a': GPU ids must be a list of strings, not NoneType",
    ),
    "empty-id": ({"node-a": ["0", " "]}, "node 'node-a': GPU ids must be non-empty strings"),
    "int-id": ({"node-a": [0]}, "node 'node-a': GPU ids must be non-empty strings, got 0"),
    "duplicate-id": ({"node-a": ["0"], "node-b": ["1", "1"]}, "node 'node-b' lists GPU '1' twice"),
}


@pytest.mark.parametrize(("nodes", "fragment"), BAD_NODES.values(), ids=BAD_NODES.keys())
def test_bad_node_inventory_is_rejected_naming_the_node(nodes, fragment):
    with pytest.raises(TraitError) as error:
        GpuInventory(nodes=nodes)
    assert fragment in str(error.value)
    assert "nodes" in str(error.value)


@pytest.mark.parametrize(
    "nodes",
    [
        {"node-a": ["0", "1"], "node-b": ["0", "1"]},  # the same id on two nodes: two GPUs
        {"gpu01.example": ["GPU-8f3c"], "cpu-only": []},  # a node without GPUs
        {},
    ],
    ids=["same-ids-on-two-nodes", "uuid-and-gpu-less-node", "none"],
)
def test_good_node_inventories_are_kept_as_given(nodes):
    assert GpuInventory(nodes=nodes).nodes == nodes


@pytest.mark.parametrize("order", [("devices", "nodes"), ("nodes", "devices")])
def test_devices_and_nodes_together_are_refused_in_either_order(order):
    values = {"devices": ["0"], "nodes": {"node-a": ["0"]}}
    cfg = Config()
    cfg.GpuInventory = Config({name: values[name] for name in order})
    with pytest.raises(TraitError, match="are alternatives: set one of them"):
        GpuInventory(config=cfg)
    with pytest.raises(ValueError, match="are alternatives"):
        GpuInventory(devices=["0"]).load_nodes({"node-a": [GpuDevice("0")]})


def test_configured_nodes_load_as_an_inventory_per_node():
    gpus = cluster({"node-b": ["0"], "node-a": ["GPU-x", "GPU-y"]})
    assert (gpus.per_node, gpus.discovery.source, gpus.discovery.problem) == (
        True,
        "configuration",
        "",
    )
    assert gpus.ids == ["node-b/0", "node-a/GPU-x", "node-a/GPU-y"]
    assert gpus.holders() == {"node-b/0": [], "node-a/GPU-x": [], "node-a/GPU-y": []}
    assert gpus.free_count() == 3


def test_what_node_agents_discovered_feeds_the_inventory_and_re_reports_keep_holders():
    gpus = GpuInventory()
    found = gpus.load_nodes(
        {"node-a": [GpuDevice("0", "NVIDIA H100", 81559)], "node-b": [GpuDevice("0")]}
    )
    assert (found.source, [d.id for d in found.devices]) == (
        "node agents",
        ["node-a/0", "node-b/0"],
    )
    assert found.devices[0] == GpuDevice("node-a/0", "NVIDIA H100", 81559)
    held = gpus.place("alice/", 1)
    gpus.load_nodes({"node-a": [GpuDevice("0")], "node-b": [GpuDevice("0"), GpuDevice("1")]})
    assert gpus.placements() == {"alice/": held}
    assert gpus.free_count() == 2
    with pytest.raises(ValueError, match="node 'node-b' lists GPU '0' twice"):
        gpus.load_nodes({"node-b": [GpuDevice("0"), GpuDevice("0")]})


def test_no_node_reporting_a_gpu_is_said_so():
    gpus = GpuInventory()
    gpus.load_nodes({})
    assert gpus.unavailable_reason(1) == "no GPU found on any node: no node reported a GPU"


# --- placement -------------------------------------------------------------------


def test_runtimes_spread_over_the_nodes_with_most_free_gpus_ties_by_name():
    gpus = cluster({"node-b": ["0", "1"], "node-a": ["0", "1"], "node-c": ["0", "1", "2"]})
    assert gpus.place("u1/", 1) == Placement("node-c", ("0",))  # most free: 3
    assert gpus.place("u2/", 1) == Placement("node-a", ("0",))  # 2, 2, 2: by name
    assert gpus.place("u3/", 1) == Placement("node-b", ("0",))
    assert gpus.place("u4/", 1) == Placement("node-c", ("1",))
    assert gpus.place("u5/", 0) == Placement("", ())  # a CPU runtime takes nothing


def test_node_local_drives_take_gpus_of_the_drives_node_only_or_say_why():
    gpus = cluster({"node-a": ["0"], "node-b": ["0", "1"]})
    # node-b has more free GPUs, but the user's drive is on node-a
    assert gpus.place("alice/", 1, only_node="node-a") == Placement("node-a", ("0",))
    with pytest.raises(NoFreeGpu, match=r"your drive is on node node-a .* no free GPU now"):
        gpus.place("bob/", 1, only_node="node-a")
    with pytest.raises(NoFreeGpu, match="your drive is on node manager"):
        gpus.place("carol/", 1, only_node="manager")  # a node without GPUs
    assert set(gpus.placements()) == {"alice/"}  # the refusals took nothing


def test_all_of_a_runtimes_gpus_are_on_one_node():
    gpus = cluster({"node-a": ["0", "1", "2"], "node-b": ["0", "1", "2"]})
    gpus.place("alice/", 1)  # node-a: 2 free, node-b: 3 free
    assert gpus.place("bob/", 3) == Placement("node-b", ("0", "1", "2"))
    assert gpus.place("carol/", 2) == Placement("node-a", ("1", "2"))
    assert {h: p.node for h, p in gpus.placements().items()} == {
        "alice/": "node-a",
        "bob/": "node-b",
        "carol/": "node-a",
    }


def one_on_each_node() -> GpuInventory:
    gpus = cluster()
    gpus.place("alice/", 1)
    gpus.place("bob/", 1)
    return gpus


def all_taken() -> GpuInventory:
    gpus = cluster()
    gpus.place("alice/", 2)
    gpus.place("bob/", 2)
    return gpus


def three_taken() -> GpuInventory:
    gpus = cluster()
    gpus.place("alice/", 2)
    gpus.place("bob/", 1)
    return gpus


@pytest.mark.parametrize(
    ("make", "count", "reason"),
    [
        (cluster, 0, ""),
        (cluster, 2, ""),
        (cluster, 5, "needs 5 GPUs but the cluster has 4"),
        (cluster, 3, "needs 3 GPUs on one node but the largest node has 2"),
        (one_on_each_node, 1, ""),
        (
            one_on_each_node,
            2,
            "no node has 2 free GPUs together (most free on one node: 1); try again later",
        ),
        (three_taken, 2, "needs 2 free GPUs but only 1 of 4 are free; try again later"),
        (all_taken, 1, "all GPUs are in use (4 of 4 taken); try again later"),
    ],
    ids=[
        "cpu-runtime",
        "two-on-a-free-node",
        "more-than-the-cluster",
        "more-than-any-node",
        "one-free-somewhere",
        "total-suffices-but-no-node-does",
        "partial-shortage",
        "all-taken",
    ],
)
def test_refusals_say_why_and_take_nothing(make, count, reason):
    gpus = make()
    before = gpus.placements()
    assert gpus.unavailable_reason(count) == reason
    if reason:
        with pytest.raises(NoFreeGpu) as refusal:
            gpus.place("zoe/", count)
        assert str(refusal.value) == reason
        assert gpus.placements() == before
    else:
        assert len(gpus.place("zoe/", count).gpu_ids) == count


@pytest.mark.parametrize(
    ("first_shares", "second_shares", "second_gets_a_gpu"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
    ids=["both-share", "exclusive-after-shared", "shared-after-exclusive", "both-exclusive"],
)
def test_a_gpu_is_shared_only_when_both_holders_share(
    first_shares, second_shares, second_gets_a_gpu
):
    gpus = cluster({"node-a": ["0"], "node-b": ["0"]})
    gpus.place("alice/", 1, sharing=first_shares)
    gpus.place("bob/", 1, sharing=first_shares)
    if second_gets_a_gpu:
        assert gpus.place("carol/", 1, sharing=second_shares) == Placement("node-a", ("0",))
        assert gpus.holders() == {"node-a/0": ["alice/", "carol/"], "node-b/0": ["bob/"]}
    else:
        with pytest.raises(NoFreeGpu, match="all GPUs are in use"):
            gpus.place("carol/", 1, sharing=second_shares)


def test_release_frees_the_holders_gpus_on_its_node_only():
    gpus = one_on_each_node()
    assert gpus.release("alice/") == ["node-a/0"]
    assert gpus.release("alice/") == []
    assert gpus.holders() == {"node-a/0": [], "node-a/1": [], "node-b/0": ["bob/"], "node-b/1": []}
    assert gpus.place("carol/", 2) == Placement("node-a", ("0", "1"))


def test_single_host_assign_is_refused_when_gpus_are_per_node():
    # ids without their node would let two nodes' "0" be confused
    with pytest.raises(RuntimeError, match="must take them with place"):
        cluster().assign("alice/", 1)


def test_place_on_a_single_host_names_no_node():
    gpus = GpuInventory(devices=["0", "1"])
    gpus.load()
    assert (gpus.per_node, gpus.place("alice/", 2)) == (False, Placement("", ("0", "1")))
    assert gpus.placements() == {"alice/": Placement("", ("0", "1"))}


def test_catalog_availability_uses_the_per_node_view(singletons):
    GpuInventory.instance(nodes=TWO_BY_TWO).load()
    catalog = RuntimeCatalog.instance(
        runtime_types=[{"name": "gpu", "gpus": 1}, {"name": "gpu2", "gpus": 2}]
    )
    catalog.gpus.place("alice/", 1)
    catalog.gpus.place("bob/", 1)
    gpu, gpu2 = catalog.types
    assert catalog.availability(gpu, []).available
    assert catalog.availability(gpu2, []).reason == (
        "no node has 2 free GPUs together (most free on one node: 1); try again later"
    )
    with pytest.raises(RuntimeRequestError, match="'gpu2' is unavailable: no node has 2"):
        catalog.admit({"runtime": "gpu2"}, [], 0)


# --- hub restart -----------------------------------------------------------------

STATES = {  # case -> (spawner state, placement read back)
    "cluster": ({"gpu_node": "node-a", "gpu_ids": ["0", "1"]}, Placement("node-a", ("0", "1"))),
    "single-host": ({"gpu_ids": ["0"]}, Placement("", ("0",))),
    "no-gpu": ({"runtime_type": "cpu"}, None),
    "empty-ids": ({"gpu_node": "node-a", "gpu_ids": []}, None),
}


@pytest.mark.parametrize(("state", "placement"), STATES.values(), ids=STATES.keys())
def test_spawner_state_round_trips_the_placement(state, placement):
    assert placement_from_state(state) == placement
    saved = placement_state(placement)
    assert saved == (state if placement else {})  # a single host's state is as before
    assert placement_from_state(saved) == placement


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ({"gpu_ids": "01"}, "gpu_ids must be a list of GPU ids"),
        ({"gpu_ids": [0]}, "gpu_ids must be a list of GPU ids"),
        ({"gpu_node": ["node-a"], "gpu_ids": ["0"]}, "gpu_node must be a node name"),
    ],
    ids=["ids-a-string", "int-id", "node-a-list"],
)
def test_a_damaged_state_is_an_error_not_a_guess(state, fragment):
    with pytest.raises(ValueError, match=fragment):
        placement_from_state(state)


def test_restore_after_hub_restart_never_double_assigns(singletons):
    before = GpuInventory.instance(nodes=TWO_BY_TWO)
    before.load()
    saved = {h: placement_state(before.place(h, n)) for h, n in [("alice/", 2), ("bob/", 1)]}
    held = before.placements()
    GpuInventory.clear_instance()  # the hub restarts; spawners load their state

    after = GpuInventory.instance(nodes=TWO_BY_TWO)
    after.load()
    for holder, state in saved.items():
        after.restore_placement(holder, placement_from_state(state))
    assert after.placements() == held
    assert after.place("carol/", 1) == Placement("node-b", ("1",))
    with pytest.raises(NoFreeGpu, match=r"all GPUs are in use \(4 of 4 taken\)"):
        after.place("dave/", 1)
    assert after.release("alice/") == ["node-a/0", "node-a/1"]
    assert after.place("dave/", 2) == Placement("node-a", ("0", "1"))


def test_gpus_restored_before_their_node_reports_stay_taken():
    gpus = GpuInventory()
    gpus.load_nodes({}, problem="no node agent has reported yet")  # a cluster hub starts
    gpus.restore("alice/", ["0"], node="node-b")  # the state is read before agents report
    gpus.load_nodes({"node-a": [GpuDevice("0")], "node-b": [GpuDevice("0")]})
    assert gpus.place("bob/", 1) == Placement("node-a", ("0",))
    assert gpus.unavailable_reason(1) == "all GPUs are in use (2 of 2 taken); try again later"


def test_a_restored_conflict_is_recorded_and_reported(caplog):
    gpus = cluster()
    gpus.place("alice/", 1)
    with caplog.at_level(logging.WARNING):
        gpus.restore("bob/", ["0"], node="node-a")
    assert "GPU node-a/0 is held by alice/ and, from saved state, by bob/" in caplog.text
    assert gpus.holders()["node-a/0"] == ["alice/", "bob/"]
    gpus.release("alice/")
    assert "node-a/0" not in [f"{p.node}/{g}" for p in [gpus.place("carol/", 2)] for g in p.gpu_ids]


def test_a_cluster_state_is_not_restored_onto_a_single_host():
    gpus = GpuInventory(devices=["0"])
    gpus.load()
    gpus.restore("alice/", ["0"], node="node-a")  # another machine's GPU "0"
    assert gpus.place("bob/", 1) == Placement("", ("0",))


# --- concurrency -----------------------------------------------------------------


async def test_twenty_concurrent_spawns_never_share_a_gpu_and_refusals_hold_nothing(singletons):
    """As RuntimeSpawnerMixin.admit_and_take_gpus does: the catalog admits (no await),
    the quota check awaits the store, then the GPUs are taken (no await). Every
    request is admitted while all GPUs are free, and takes after the others awaited."""
    inventory = GpuInventory.instance(nodes=TWO_BY_TWO)
    inventory.load()
    catalog = RuntimeCatalog.instance(
        runtime_types=[{"name": "gpu", "gpus": 1}, {"name": "gpu2", "gpus": 2}]
    )
    rng = random.Random(15)
    held: dict[tuple[str, str], str] = {}  # (node, gpu) -> holder, as the runtimes see it
    outcome: dict[str, str] = {}

    async def spawn(holder: str, runtime: str) -> None:
        try:
            runtime_type = catalog.admit({"runtime": runtime}, [], 0)
        except RuntimeRequestError:
            outcome[holder] = "refused at admission"
            return
        await asyncio.sleep(rng.uniform(0, 0.005))  # the quota check's await
        try:
            placement = inventory.place(holder, runtime_type.gpus, runtime_type.gpu_sharing)
        except NoFreeGpu:
            outcome[holder] = "refused at take"
            assert holder not in inventory.placements()
            return
        assert len(placement.gpu_ids) == runtime_type.gpus
        for gid in placement.gpu_ids:
            assert (placement.node, gid) not in held, f"{holder} got {held[placement.node, gid]}'s"
            held[placement.node, gid] = holder
        outcome[holder] = "ran"
        await asyncio.sleep(rng.uniform(0, 0.01))  # the runtime runs, then stops
        for gid in placement.gpu_ids:
            del held[placement.node, gid]
        assert len(inventory.release(holder)) == runtime_type.gpus

    requests = [(f"user{i}/", rng.choice(["gpu", "gpu2"])) for i in range(20)]
    await asyncio.gather(*(spawn(holder, runtime) for holder, runtime in requests))

    assert len(outcome) == 20
    assert "ran" in outcome.values()
    assert "refused at take" in outcome.values()  # the race happened, and was refused
    assert inventory.placements() == {}
    assert inventory.free_count() == 4
