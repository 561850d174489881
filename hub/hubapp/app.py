"""KernelHubApp: JupyterHub with kernelhub's API routes and runtime catalog."""

from __future__ import annotations

import signal
from typing import Any

from jupyterhub.app import JupyterHub
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, List, Unicode, default

from kernelhub import __version__
from kernelhub.executor import run_blocking
from kernelhub.hubapp.api import kernelhub_api_handlers
from kernelhub.hubapp.branding import LOGO_FILE, add_base_templates, sign_in_method
from kernelhub.hubapp.home import runtimes_template_var
from kernelhub.hubapp.runtime_switch import runtime_switch_handlers
from kernelhub.hubapp.user_runtimes import user_runtimes_handlers
from kernelhub.quotagate.gate import QuotaGate
from kernelhub.quotagate.notices import notices_template_var
from kernelhub.runtimes.catalog import RuntimeCatalog
from kernelhub.runtimes.engine import missing_images
from kernelhub.runtimes.gpus import GpuInventory, discover_with_nvml

IMAGE_CHECK_SECONDS = 60
WARM_REAP_SECONDS = 15


class KernelHubApp(JupyterHub):
    """JupyterHub as kernelhub runs it (``kernelhub up``)."""

    name = "kernelhub"
    version = __version__
    description = "kernelhub: Colab-style notebooks on your own machines"

    stop_runtimes_on_interrupt = Bool(
        True,
        help="""Ctrl-C (SIGINT) stops running runtimes along with the hub and proxy.
        SIGTERM (a service manager restarting the hub) always leaves them running;
        the next start adopts them again.""",
    ).tag(config=True)

    startup_notes = List(
        Unicode(),
        help="Lines `kernelhub up` logs once logging is set up: which backends and why.",
    ).tag(config=True)

    @default("logo_file")
    def _kernelhub_logo(self) -> str:
        # the nav bar's logo on every hub page (c.JupyterHub.logo_file replaces it)
        return LOGO_FILE

    def load_config_file(self, *args: Any, **kwargs: Any) -> None:
        """`kernelhub up` has already merged the config file into self.config."""

    def init_tornado_settings(self) -> None:
        # the home page's quota notices and runtime list, and the sign-in page's
        # "which sign-in", next to whatever template_vars the config sets
        configured = dict(self.template_vars)  # type: ignore[has-type]  # untyped upstream
        self.template_vars = {
            "kernelhub_notices": notices_template_var,
            "kernelhub_runtimes": runtimes_template_var,
            "kernelhub_sign_in": lambda user: sign_in_method(self.authenticator),
            **configured,
        }
        super().init_tornado_settings()
        # kernelhub's page.html, login.html... extend the templates they replace
        if not add_base_templates(self.tornado_settings["jinja2_env"]):
            # every page of ours would fail to render: better not to start
            raise RuntimeError("kernelhub's page templates cannot load: unexpected Jinja loader")

    def init_handlers(self) -> None:
        super().init_handlers()
        # in front of JupyterHub's own routes, so ours answer first
        ours = [*kernelhub_api_handlers(), *runtime_switch_handlers(), *user_runtimes_handlers()]
        self.handlers[0:0] = self.add_url_prefix(self.hub_prefix, ours)

    async def init_spawners(self) -> Any:
        for note in self.startup_notes:
            self.log.info(note)
        await self.init_runtime_catalog()
        gate = QuotaGate.instance(parent=self)
        self.log.info(
            "Quota checks before spawns: %s",
            "on (the quota daemon's store)" if gate.db_url else "off (QuotaGate.db_url is empty)",
        )
        return await super().init_spawners()

    async def init_runtime_catalog(self) -> None:
        catalog = RuntimeCatalog.instance(parent=self)
        inventory = GpuInventory.instance(parent=self)
        discovery = None
        if not inventory.devices and not inventory.nodes and inventory.use_nvml:
            discovery = await run_blocking(discover_with_nvml)
        found = inventory.load(discovery)
        if found.devices:
            self.log.info(
                "GPUs (%s): %s", found.source, ", ".join(f"{d.id} {d.name}" for d in found.devices)
            )
        else:
            self.log.info("No GPUs (%s): GPU runtime types are shown disabled", found.problem)
        self.log.info("Runtime types: %s", ", ".join(catalog.names))
        reap = getattr(self.spawner_class, "reap_warm_runtimes", None)
        if reap is not None:  # DockerRuntimeSpawner's warm runtimes: removed when unused
            upkeep = PeriodicCallback(reap, WARM_REAP_SECONDS * 1000)
            upkeep.start()
            self._periodic_callbacks["kernelhub-warm-runtimes"] = upkeep
        if getattr(self.spawner_class, "uses_images", False):
            await self.refresh_missing_images()
            watch = PeriodicCallback(self.refresh_missing_images, IMAGE_CHECK_SECONDS * 1000)
            watch.start()
            self._periodic_callbacks["kernelhub-runtime-images"] = watch

    async def refresh_missing_images(self) -> None:
        """Note which runtime images the engine lacks, so their types show disabled."""
        catalog = RuntimeCatalog.instance()
        wanted = sorted({t.image for t in catalog.types if t.image})
        missing = frozenset(await run_blocking(missing_images, wanted))
        if missing != catalog.missing_images:
            self.log.info("Runtime images missing: %s", ", ".join(sorted(missing)) or "none")
        catalog.missing_images = missing

    async def cleanup(self) -> None:
        # warm runtimes belong to this hub process: none outlives it
        remove = getattr(self.spawner_class, "remove_warm_runtimes", None)
        if remove is not None:
            try:
                await remove()
            except Exception as e:  # the rest of the clean-up must still run
                self.log.warning("Could not remove warm runtimes: %s", e)
        await super().cleanup()

    async def shutdown_cancel_tasks(self, sig: Any = None) -> None:
        if sig == signal.SIGINT and self.stop_runtimes_on_interrupt:
            self.cleanup_servers = True
        await super().shutdown_cancel_tasks(sig)
