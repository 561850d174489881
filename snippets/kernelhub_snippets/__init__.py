"""kernelhub-snippets: the notebook's code-snippet library, served by a Jupyter server
extension (enabled on install through etc/jupyter/jupyter_server_config.d), and its
Notebook 7 / JupyterLab 4 frontend (the prebuilt labextension @kernelhub/snippets,
installed under share/jupyter/labextensions by the wheel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "kernelhub_snippets"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built frontend is, for `jupyter labextension develop` (editable installs)."""
    return [{"src": "labextension", "dest": "@kernelhub/snippets"}]


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    # imported here so that `import kernelhub_snippets` (the check CLI, the tests'
    # parsing) does not pull in the whole server
    from kernelhub_snippets.handlers import load_extension
    from kernelhub_snippets.kernel_reports import load_kernel_reports
    from kernelhub_snippets.notices import load_notices
    from kernelhub_snippets.resources import load_resources
    from kernelhub_snippets.runtime_menu import load_runtime_menu

    load_extension(serverapp)
    load_notices(serverapp)  # kernelhub's quota notices, for the notebook to show
    # this runtime's kernel state, sent to the hub for the quota daemon's idle rule
    load_kernel_reports(serverapp)
    load_runtime_menu(serverapp)  # the notebook's Runtime menu asks the hub through it
    load_resources(serverapp)  # this runtime's RAM/CPU (its cgroup), drive and GPUs


# the name jupyter_server 1.x looked for; kept so older servers load it too
load_jupyter_server_extension = _load_jupyter_server_extension
