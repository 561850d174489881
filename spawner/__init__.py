"""kernelhub's runtime spawners (the ``spawner/`` folder, imported as ``kernelhub.spawner``):
``runtime`` (the form, validation and apply every backend shares), ``local`` and
``docker_runtime``."""
