"""Specification of the GPU inventory: what the host has, and who holds which GPU."""

import asyncio

import pytest

from kernelhub.runtimes.gpus import Discovery, GpuDevice, GpuInventory, NoFreeGpu

FOUR = ["0", "1", "2", "3"]
NVML_FOUND = Discovery((GpuDevice("0", "NVIDIA H100", 81559),), "nvml")
NVML_BROKEN = Discovery((), "nvml", "NVML unavailable (Driver Not Loaded)")


def inventory(devices=FOUR, **traits) -> GpuInventory:
    gpus = GpuInventory(devices=list(devices), **traits)
    gpus.load()
    return gpus


@pytest.fixture
def singleton():
    """The process-wide inventory, as the hub and every spawner reach it."""
    GpuInventory.clear_instance()
    yield
    GpuInventory.clear_instance()


@pytest.mark.parametrize(
    ("devices", "use_nvml", "discovery", "source", "ids", "problem"),
    [
        (["0", "GPU-8f3c"], True, NVML_FOUND, "configuration", ["0", "GPU-8f3c"], ""),
        ([], True, NVML_FOUND, "nvml", ["0"], ""),
        ([], True, NVML_BROKEN, "nvml", [], "NVML unavailable (Driver Not Loaded)"),
        ([], False, NVML_FOUND, "none", [], "GPU discovery is turned off"),
    ],
    ids=["configured-devices-win", "nvml-discovery", "nvml-broken", "nvml-turned-off"],
)
def test_load_fixes_the_inventory(devices, use_nvml, discovery, source, ids, problem):
    gpus = GpuInventory(devices=devices, use_nvml=use_nvml)
    found = gpus.load(discovery)
    assert (found.source, gpus.ids, found.problem) == (source, ids, problem)
    assert gpus.free_count() == len(ids)
    assert gpus.holders() == {gid: [] for gid in ids}


def test_configured_devices_keep_their_names_and_order():
    gpus = inventory(["GPU-b", "GPU-a"])
    assert [d.id for d in gpus.discovery.devices] == ["GPU-b", "GPU-a"]


def test_an_inventory_not_loaded_yet_has_no_gpus():
    gpus = GpuInventory(devices=FOUR)
    assert (gpus.ids, gpus.free_count()) == ([], 0)
    assert gpus.unavailable_reason(1) == "no GPU found on this host: not discovered yet"


def broken_nvml() -> GpuInventory:
    gpus = GpuInventory()
    gpus.load(NVML_BROKEN)
    return gpus


def one_taken() -> GpuInventory:
    gpus = inventory(["0", "1"])
    gpus.assign("alice/", 1)
    return gpus


def all_taken() -> GpuInventory:
    gpus = inventory(["0", "1"])
    gpus.assign("alice/", 2)
    return gpus


@pytest.mark.parametrize(
    ("make", "count", "reason"),
    [
        (broken_nvml, 0, ""),
        (broken_nvml, 1, "no GPU found on this host: NVML unavailable (Driver Not Loaded)"),
        (lambda: inventory([]), 1, "no GPU found on this host: GPUs have not been discovered"),
        (lambda: inventory(["0"]), 1, ""),
        (lambda: inventory(["0"]), 2, "needs 2 GPUs but this host has 1"),
        (one_taken, 1, ""),
        (all_taken, 1, "all GPUs are in use (2 of 2 taken); try again later"),
    ],
    ids=[
        "cpu-runtime-never-needs-a-gpu",
        "no-gpu-names-discovery-problem",
        "no-gpu-not-discovered",
        "free-gpu",
        "more-than-the-host-has",
        "one-of-two-free",
        "all-taken",
    ],
)
def test_unavailable_reason_says_why_or_is_empty(make, count, reason):
    gpus = make()
    assert gpus.unavailable_reason(count) == reason
    if reason:
        with pytest.raises(NoFreeGpu) as refusal:
            gpus.assign("bob/", count)
        assert str(refusal.value) == reason
    else:
        assert len(gpus.assign("bob/", count)) == count


def test_a_partial_shortage_is_not_reported_as_all_gpus_in_use():
    reason = one_taken().unavailable_reason(2)  # one of the two GPUs is still free
    assert "only 1 of 2 are free" in reason
    assert "all GPUs are in use" not in reason


def test_assign_hands_out_distinct_gpus_in_inventory_order():
    gpus = inventory()
    assert gpus.assign("alice/", 2) == ["0", "1"]
    assert gpus.assign("alice/exp1", 1) == ["2"]
    assert gpus.assign("bob/", 0) == []
    assert gpus.free_count() == 1
    assert gpus.holders() == {"0": ["alice/"], "1": ["alice/"], "2": ["alice/exp1"], "3": []}


async def test_twenty_holders_racing_for_four_gpus_get_exactly_four():
    gpus = inventory()

    async def ask(holder: str) -> list[str] | None:
        await asyncio.sleep(0)  # let every request be in flight before any is served
        try:
            return gpus.assign(holder, 1)
        except NoFreeGpu:
            return None

    results = await asyncio.gather(*(ask(f"user{i}/") for i in range(20)))
    granted = [ids for ids in results if ids is not None]
    assert len(granted) == 4
    assert sorted(gid for ids in granted for gid in ids) == FOUR
    assert all(len(holders) == 1 for holders in gpus.holders().values())
    assert gpus.free_count() == 0


def test_release_frees_a_gpu_for_the_next_holder():
    gpus = inventory(["0"])
    gpus.assign("alice/", 1)
    assert gpus.release("alice/") == ["0"]
    assert (gpus.free_count(), gpus.holders()) == (1, {"0": []})
    assert gpus.assign("bob/", 1) == ["0"]


def test_releasing_a_holder_without_gpus_changes_nothing():
    gpus = inventory()
    gpus.assign("alice/", 1)
    assert gpus.release("bob/") == []
    assert gpus.holders()["0"] == ["alice/"]


def test_restore_after_hub_restart_marks_gpus_taken_again(singleton):
    before = GpuInventory.instance(devices=FOUR)
    before.load()
    state = {"gpu_ids": before.assign("alice/", 2)}  # what the spawner persists
    GpuInventory.clear_instance()  # the hub restarts

    after = GpuInventory.instance(devices=FOUR)
    after.load()
    after.restore("alice/", state["gpu_ids"])
    assert after.free_count() == 2
    assert after.assign("bob/", 2) == ["2", "3"]
    assert after.unavailable_reason(1) == "all GPUs are in use (4 of 4 taken); try again later"
    assert after.release("alice/") == ["0", "1"]


@pytest.mark.parametrize(
    ("first_shares", "second_shares", "second_gets_the_gpu"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
    ids=["both-share", "exclusive-after-shared", "shared-after-exclusive", "both-exclusive"],
)
def test_gpu_sharing_needs_both_holders_to_agree(first_shares, second_shares, second_gets_the_gpu):
    gpus = inventory(["0"])
    gpus.assign("alice/", 1, sharing=first_shares)
    assert (gpus.free_count(second_shares) == 1) is second_gets_the_gpu
    if second_gets_the_gpu:
        assert gpus.assign("bob/", 1, sharing=second_shares) == ["0"]
        assert gpus.holders() == {"0": ["alice/", "bob/"]}
    else:
        with pytest.raises(NoFreeGpu):
            gpus.assign("bob/", 1, sharing=second_shares)


def test_a_shared_gpu_is_exclusive_again_once_every_sharer_left():
    gpus = inventory(["0"])
    gpus.assign("alice/", 1, sharing=True)
    gpus.restore("bob/", ["0"], sharing=True)
    gpus.release("alice/")
    assert gpus.free_count() == 0  # bob still uses it
    gpus.release("bob/")
    assert gpus.assign("carol/", 1) == ["0"]
    assert gpus.free_count(sharing=True) == 0
