"""kernelhub: a self-hosted, multi-user notebook service in the spirit of Google Colab.

The ``hub/`` folder is the ``kernelhub`` package; ``spawner/`` and ``quotas/`` are
its sub-packages ``kernelhub.spawner`` and ``kernelhub.quotas`` (see pyproject.toml).
"""

__version__ = "0.1.0"
