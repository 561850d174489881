"""kernelhub: a self-hosted, multi-user notebook service in the spirit of Google Colab.

The ``hub/`` folder is the ``kernelhub`` package; ``spawner/`` and ``quotas/`` are
its sub-packages ``kernelhub.spawner`` and ``kernelhub.quotas`` (see pyproject.toml).
Inside ``hub/`` each folder serves one audience: ``hubapp`` (the running hub),
``runtimes`` (types, catalog, GPUs, drives), ``quotagate`` (the hub's read side of
quotas), ``signin``, ``launcher`` (``kernelhub up``), ``clients`` (the CLIs) and
``imagetools``; ``contract`` is what the spawners and the quota daemon agree on.
"""

__version__ = "0.1.0"
