"""kernelhub's runtime spawners (the ``spawner/`` folder, imported as ``kernelhub.spawner``)."""

from .local import LocalRuntimeSpawner
from .runtime import RuntimeSpawnerMixin

__all__ = ["LocalRuntimeSpawner", "RuntimeSpawnerMixin"]
