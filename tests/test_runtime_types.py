"""Specification of runtime types: configuration parsing, request validation and the catalog."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from traitlets import TraitError
from traitlets.config import Config

from kernelhub.quotas.policy import Limits, check_spawn
from kernelhub.runtimes.catalog import RuntimeCatalog, UserLoad
from kernelhub.runtimes.gpus import GpuInventory
from kernelhub.runtimes.types import (
    DEFAULT_RUNTIME_TYPES,
    RuntimeRequestError,
    RuntimeType,
    RuntimeTypeConfigError,
    group_permission,
    parse_runtime_types,
    requested_runtime_name,
)

VALID = ["cpu", "gpu"]


def catalog_config(**traits: object) -> Config:
    cfg = Config()
    cfg.RuntimeCatalog = Config(traits)
    return cfg


@pytest.fixture
def singletons():
    """A fresh GpuInventory singleton (one free GPU) for the catalog to consult."""
    RuntimeCatalog.clear_instance()
    GpuInventory.clear_instance()
    inventory = GpuInventory.instance(devices=["0"])
    inventory.load()
    yield inventory
    GpuInventory.clear_instance()
    RuntimeCatalog.clear_instance()


def test_defaults_parse_into_a_cpu_and_a_gpu_type():
    cpu, gpu = parse_runtime_types(DEFAULT_RUNTIME_TYPES)
    assert (cpu.name, cpu.gpus, cpu.mem_limit, cpu.cpu_limit) == ("cpu", 0, "4G", 2.0)
    assert (gpu.name, gpu.gpus, gpu.gpu_sharing) == ("gpu", 1, False)


def test_optional_fields_get_sensible_defaults_and_values_are_normalised():
    (rt,) = parse_runtime_types([{"name": "tiny", "mem_limit": 512, "cpu_limit": 1}])
    assert rt == RuntimeType(name="tiny", display_name="tiny", mem_limit="512", cpu_limit=1.0)
    assert rt.to_json()["allowed_groups"] == []


BAD_ENTRIES = {  # case -> (configured entries, fragment of the error)
    "no-types": ([], "at least one runtime type"),
    "not-a-dict": (["cpu"], "runtime type #1 must be a dict, not str"),
    "unknown-field": ([{"name": "cpu", "colour": 1}], "unknown field(s) colour; valid fields:"),
    "missing-name": ([{"display_name": "CPU"}], "runtime type #1 needs a 'name'"),
    "uppercase-name": ([{"name": "CPU"}], "needs a 'name' of lowercase letters"),
    "name-starts-with-digit": ([{"name": "9cpu"}], "needs a 'name'"),
    "name-too-long": ([{"name": "a" * 33}], "needs a 'name'"),
    "name-trailing-newline": ([{"name": "cpu\n"}], "needs a 'name'"),
    "duplicate-name": ([{"name": "cpu"}, {"name": "cpu"}], "runtime type 'cpu' is defined twice"),
    "display-name-int": ([{"name": "cpu", "display_name": 3}], "display_name must be a string"),
    "description-null": ([{"name": "cpu", "description": None}], "description must be a string"),
    "mem-limit-spaced": ([{"name": "cpu", "mem_limit": "4 GB"}], "mem_limit must look like '512M'"),
    "mem-limit-newline": ([{"name": "cpu", "mem_limit": "4G\n"}], "mem_limit must look like"),
    "mem-limit-bool": ([{"name": "cpu", "mem_limit": True}], "mem_limit must look like"),
    "cpu-limit-zero": ([{"name": "cpu", "cpu_limit": 0}], "cpu_limit must be a positive number"),
    "cpu-limit-str": ([{"name": "cpu", "cpu_limit": "2"}], "cpu_limit must be a positive"),
    "cpu-limit-bool": ([{"name": "cpu", "cpu_limit": True}], "cpu_limit must be a positive"),
    "cpu-limit-nan": ([{"name": "cpu", "cpu_limit": float("nan")}], "cpu_limit must be a"),
    "gpus-negative": ([{"name": "gpu", "gpus": -1}], "gpus must be a whole number >= 0, got -1"),
    "gpus-fraction": ([{"name": "gpu", "gpus": 1.5}], "gpus must be a whole number >= 0"),
    "gpus-bool": ([{"name": "gpu", "gpus": True}], "gpus must be a whole number >= 0"),
    "image-blank": ([{"name": "cpu", "image": "  "}], "image must be a non-empty string"),
    "groups-a-string": ([{"name": "x", "allowed_groups": "staff"}], "allowed_groups must be"),
    "groups-not-names": ([{"name": "x", "allowed_groups": [1]}], "allowed_groups must be"),
    "groups-null": ([{"name": "x", "allowed_groups": None}], "allowed_groups must be a list"),
    "sharing-not-bool": ([{"name": "gpu", "gpu_sharing": "yes"}], "gpu_sharing must be true"),
}


@pytest.mark.parametrize(("entries", "fragment"), list(BAD_ENTRIES.values()), ids=list(BAD_ENTRIES))
def test_bad_config_entry_is_rejected_naming_entry_and_field(entries, fragment):
    with pytest.raises(RuntimeTypeConfigError) as error:
        parse_runtime_types(entries)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("user_options", "expected"),
    [(None, "cpu"), ({}, "cpu"), ({"runtime": "gpu"}, "gpu"), ({"runtime": "cpu"}, "cpu")],
    ids=["none-means-default", "empty-means-default", "gpu", "cpu"],
)
def test_valid_user_options_name_a_runtime(user_options, expected):
    assert requested_runtime_name(user_options, "cpu", VALID) == expected


@pytest.mark.parametrize(
    ("user_options", "fragment"),
    [
        ("gpu", 'must be a JSON object like {"runtime": "cpu"}'),
        (["gpu"], "must be a JSON object"),
        ({"runtime": "gpu", "gpus": 2}, "unknown user option(s): gpus"),
        ({"runtime": 1}, "'runtime' must be a string"),
        ({"runtime": None}, "'runtime' must be a string"),
        ({"runtime": "tpu"}, "unknown runtime type 'tpu'"),
        ({"runtime": "GPU"}, "unknown runtime type 'GPU'"),
        ({"runtime": ""}, "unknown runtime type ''"),
    ],
    ids=["string", "list", "extra-key", "int", "null", "unknown", "wrong-case", "empty"],
)
def test_bad_user_options_are_refused_naming_the_valid_choices(user_options, fragment):
    with pytest.raises(RuntimeRequestError) as error:
        requested_runtime_name(user_options, "cpu", VALID)
    assert error.value.status == 400
    assert fragment in error.value.message
    assert "cpu, gpu" in error.value.message


@pytest.mark.parametrize(
    ("allowed", "user_groups", "available"),
    [((), [], True), (("staff",), ["staff", "x"], True), (("staff", "ml"), ["students"], False)],
    ids=["open-to-everyone", "member", "non-member"],
)
def test_group_permission(allowed, user_groups, available):
    verdict = group_permission(RuntimeType("gpu", "GPU", allowed_groups=allowed), user_groups)
    assert verdict.available is available
    assert verdict.reason == ("" if available else "only for members of group(s): staff, ml")


def test_catalog_defaults_to_the_built_in_types_and_first_type():
    catalog = RuntimeCatalog()
    assert catalog.names == VALID
    assert (catalog.default_runtime, catalog.max_running_runtimes_per_user) == ("cpu", 2)


def test_catalog_default_runtime_follows_configured_types():
    catalog = RuntimeCatalog(config=catalog_config(runtime_types=[{"name": "big"}]))
    assert (catalog.names, catalog.default_runtime, catalog.get("big").gpus) == (["big"], "big", 0)


@pytest.mark.parametrize(
    ("traits", "fragment"),
    [
        ({"runtime_types": []}, "RuntimeCatalog.runtime_types: at least one"),
        ({"runtime_types": [{"name": "x", "gpus": -1}]}, "runtime type 'x': gpus must be"),
        ({"default_runtime": "tpu"}, "'tpu' is not a runtime type; choose one of: cpu, gpu"),
        ({"max_running_runtimes_per_user": -1}, "max_running_runtimes_per_user must be >= 0"),
    ],
    ids=["no-types", "bad-type", "unknown-default", "negative-cap"],
)
def test_bad_catalog_config_fails_at_load(traits, fragment):
    with pytest.raises(TraitError, match="RuntimeCatalog") as error:
        RuntimeCatalog(config=catalog_config(**traits))
    assert fragment in str(error.value)


def test_view_shows_every_type_with_its_availability(singletons):
    singletons.assign("bob/", 1)
    view = RuntimeCatalog().view(["students"]).to_json()
    assert [(e["name"], e["available"]) for e in view] == [("cpu", True), ("gpu", False)]
    assert view[1]["reason"] == "all GPUs are in use (1 of 1 taken); try again later"


def test_group_restriction_is_reported_before_gpu_shortage(singletons):
    types = [{"name": "cpu"}, {"name": "gpu", "gpus": 1, "allowed_groups": ["staff"]}]
    catalog = RuntimeCatalog(config=catalog_config(runtime_types=types))
    singletons.assign("bob/", 1)
    reason = catalog.availability(catalog.get("gpu"), ["students"]).reason
    assert reason == "only for members of group(s): staff"


def test_admit_returns_the_requested_type(singletons):
    assert RuntimeCatalog().admit({"runtime": "gpu"}, [], other_running=0).name == "gpu"
    assert RuntimeCatalog().admit(None, [], other_running=1).name == "cpu"


@pytest.mark.parametrize(
    ("types", "still_available"),
    [(None, "cpu"), ([{"name": "gpu", "gpus": 1}], "none")],
    ids=["cpu-still-free", "nothing-left"],
)
def test_admit_refuses_an_unavailable_type_naming_what_is_left(singletons, types, still_available):
    catalog = RuntimeCatalog(config=catalog_config(runtime_types=types) if types else None)
    singletons.assign("bob/", 1)
    with pytest.raises(RuntimeRequestError) as error:
        catalog.admit({"runtime": "gpu"}, [], other_running=0)
    assert error.value.message == (
        "runtime type 'gpu' is unavailable: all GPUs are in use (1 of 1 taken); "
        f"try again later; available now: {still_available}"
    )


@pytest.mark.parametrize(
    ("cap", "other_running", "admitted"),
    [(2, 1, True), (2, 2, False), (1, 1, False), (0, 50, True)],
    ids=["below-cap", "at-cap", "cap-of-one", "zero-means-no-cap"],
)
def test_admit_enforces_the_per_user_cap(singletons, cap, other_running, admitted):
    catalog = RuntimeCatalog(config=catalog_config(max_running_runtimes_per_user=cap))
    if admitted:
        assert catalog.admit({"runtime": "cpu"}, [], other_running).name == "cpu"
        return
    with pytest.raises(RuntimeRequestError, match=f"runtime limit reached: {cap} of {cap} "):
        catalog.admit({"runtime": "cpu"}, [], other_running)


@pytest.mark.parametrize("limit", [1, 2])
def test_the_hub_cap_and_a_quota_rule_refuse_too_many_runtimes_alike(singletons, limit):
    catalog = RuntimeCatalog(config=catalog_config(max_running_runtimes_per_user=limit))
    with pytest.raises(RuntimeRequestError) as by_cap:
        catalog.admit({"runtime": "cpu"}, [], other_running=limit)

    by_rule = check_spawn(Limits(max_concurrent=limit), 0, [], limit, 0, datetime.now(UTC))

    assert by_rule is not None
    assert (by_cap.value.status, by_cap.value.message) == (by_rule.status, by_rule.message)
    assert by_cap.value.status == 403


def hub_user(name: str = "alice", **servers: tuple[bool, list[str]]) -> SimpleNamespace:
    """A stand-in JupyterHub user: server name -> (active, GPU ids held)."""
    spawners = {
        server: SimpleNamespace(active=active, gpu_ids=gpus)
        for server, (active, gpus) in servers.items()
    }
    return SimpleNamespace(name=name, spawners=spawners, groups=[])


def test_load_counts_other_active_runtimes_and_their_gpus(singletons):
    user = hub_user(default=(True, ["0"]), exp1=(True, []), old=(False, ["1"]))
    catalog = RuntimeCatalog()
    assert catalog.load_of(user, "new") == UserLoad(runtimes=2, gpus=1)
    assert catalog.load_of(user, "default") == UserLoad(runtimes=1, gpus=0)


def test_an_admitted_spawn_counts_until_its_spawner_holds_its_gpus(singletons):
    catalog = RuntimeCatalog()
    gpu = catalog.get("gpu")
    user = hub_user()  # no server yet: the REST API admits before JupyterHub creates it

    catalog.admissions.add("alice", "exp1", gpu)
    assert catalog.load_of(user, "exp2") == UserLoad(runtimes=1, gpus=1)
    assert catalog.load_of(user, "exp1") == UserLoad(runtimes=0, gpus=0), "not itself"

    user.spawners["exp1"] = SimpleNamespace(active=True, gpu_ids=[])  # starting, no GPU yet
    catalog.admissions.end_request(user, "exp1")
    assert catalog.load_of(user, "exp2") == UserLoad(runtimes=1, gpus=1), "counted once"

    user.spawners["exp1"].gpu_ids = ["0"]
    catalog.admissions.settle("alice", "exp1")
    assert catalog.load_of(user, "exp2") == UserLoad(runtimes=1, gpus=1)


def test_an_admission_whose_request_ended_with_no_spawn_is_forgotten(singletons):
    catalog = RuntimeCatalog()
    user = hub_user()
    catalog.admissions.add("alice", "exp1", catalog.get("gpu"))

    catalog.admissions.end_request(user, "exp1")  # JupyterHub refused, or the spawn failed

    assert catalog.load_of(user, "exp2") == UserLoad(runtimes=0, gpus=0)
    assert not catalog.admissions.in_flight(user, "exp1")


async def test_admissions_of_one_user_are_judged_one_after_the_other(singletons):
    """Count, an awaited check, then record: under the user's lock no two see one count."""
    catalog = RuntimeCatalog()
    user = hub_user()
    seen: list[UserLoad] = []

    async def admit(server: str) -> None:
        async with catalog.admissions.lock(user.name):
            seen.append(catalog.load_of(user, server))
            await asyncio.sleep(0.01)  # the quota store is read on a thread meanwhile
            catalog.admissions.add(user.name, server, catalog.get("gpu"))

    await asyncio.gather(*(admit(f"exp{i}") for i in range(3)))

    assert [load.gpus for load in seen] == [0, 1, 2]
