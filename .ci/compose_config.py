# CI's config for the compose deployment: the production one, with runtime types that
# use the small test image (the ML images take too long to build for every CI run).
c = get_config()  # noqa: F821
load_subconfig("compose_base.py")  # noqa: F821  (images/hub/kernelhub_config.py)

c.RuntimeCatalog.runtime_types = [
    {
        "name": "cpu",
        "display_name": "None (CPU)",
        "image": "kernelhub/runtime-test:latest",
        "mem_limit": "1G",
        "cpu_limit": 1.0,
    },
    {"name": "gpu", "display_name": "GPU", "image": "kernelhub/runtime-test:latest", "gpus": 1},
]
