"""``kernelhub-quotad``: the quota daemon as a JupyterHub-managed service.

`kernelhub up` starts it with the hub's service environment (JUPYTERHUB_API_URL,
JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_URL, JUPYTERHUB_SERVICE_PREFIX). It runs
the sampling cycle and serves Prometheus ``/metrics`` (and the quota REST API,
where ``kernelhub.quotas.api`` is installed) on the service's port.
SIGTERM and SIGINT stop it cleanly between cycles.

On a cluster it runs on every node (a global Swarm service) with ``--node-local``:
it reads the node's processes from ``--proc`` (the node's /proc, bind-mounted where the
host's PID namespace cannot be shared) and accounts, judges and stops only the runtimes
whose processes it finds there; all of them write into the one PostgreSQL store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlparse

from tornado import web

from kernelhub.contract import QUOTA_DB_ENV
from kernelhub.quotas.api import make_app
from kernelhub.quotas.clock import SystemClock
from kernelhub.quotas.daemon import DEFAULT_INTERVAL, DEFAULT_PROCESS_INTERVAL, QuotaDaemon
from kernelhub.quotas.disclosure import DEFAULT_CONTACT, default_contact
from kernelhub.quotas.engine import QuotaStoreError
from kernelhub.quotas.hub_api import HubApi
from kernelhub.quotas.metrics import CONTENT_TYPE_LATEST, QuotaMetrics
from kernelhub.quotas.policy import Rule
from kernelhub.quotas.ports import Detector
from kernelhub.quotas.runtimes import ProcessScanner
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import GpuTelemetry
from kernelhub.secrets_files import SecretFileError, secret_from_env, url_with_password

log = logging.getLogger("kernelhub.quotad")


# the scope JupyterHub's own /hub/metrics asks for: Prometheus scrapes both with one token
METRICS_SCOPE = "read:metrics"
# the quota store's password, when KERNELHUB_QUOTA_DB_URL names none (a *_FILE variant too)
QUOTA_DB_PASSWORD_ENV = "KERNELHUB_QUOTA_DB_PASSWORD"
# where the node's processes are read: /proc, or the host's /proc bind-mounted into a
# container that cannot share the host's PID namespace (a Swarm service)
PROC_ENV = "KERNELHUB_QUOTAD_PROC"
NODE_LOCAL_ENV = "KERNELHUB_QUOTAD_NODE_LOCAL"


class MetricsHandler(web.RequestHandler):
    """Prometheus ``/metrics``: user names and their GPU-seconds, so a token with
    ``read:metrics`` is required, unless the service runs with ``--metrics-public``."""

    def initialize(self, metrics: QuotaMetrics, hub_auth: Any = None) -> None:
        self.metrics = metrics
        self.hub_auth = hub_auth  # None: public

    async def get(self) -> None:
        if self.hub_auth is not None:
            await self._authorize()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(self.metrics.render())

    async def _authorize(self) -> None:
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError:
            self._refuse(502, "cannot check the token with the hub; try again")
        if not model:
            self._refuse(401, "send a hub token with read:metrics: Authorization: token <token>")
        if METRICS_SCOPE not in (model.get("scopes") or []):
            self._refuse(403, "this token lacks the read:metrics scope")

    def _refuse(self, status: int, message: str) -> NoReturn:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status, "message": message}))
        raise web.Finish()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kernelhub-quotad", description="kernelhub's GPU quota daemon (a JupyterHub service)"
    )
    parser.add_argument("--db-url", default=os.environ.get(QUOTA_DB_ENV))
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="seconds")
    parser.add_argument(
        "--account-period",
        type=float,
        default=60.0,
        help="seconds between usage writes per runtime (0: every cycle); a kill -9 "
        "still loses no GPU-seconds (the restart accounts from the store's cursor)",
    )
    parser.add_argument(
        "--process-interval",
        type=float,
        default=DEFAULT_PROCESS_INTERVAL,
        help="seconds between reads of the runtimes' processes (CPU time, memory, "
        "connections), at most; GPUs are read every --interval",
    )
    parser.add_argument(
        "--telemetry", default="nvml", help="nvml, or replay:PATH (a recorded trace, looped)"
    )
    parser.add_argument(
        "--replay-pid",
        action="append",
        default=[],
        metavar="RECORDED=PID",
        help="with replay: attach a recorded PID to a process of this host (repeatable)",
    )
    # accepted, and ignored, for command lines of earlier versions: the daemon no longer
    # calls into user servers (runtimes report their kernels to the hub)
    parser.add_argument("--public-url", help=argparse.SUPPRESS)
    parser.add_argument("--max-session-hours", type=float, help="default for every runtime type")
    parser.add_argument("--idle-minutes", type=float, help="default idle timeout")
    parser.add_argument(
        "--mining-detector",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop and flag runtimes that behave like cryptocurrency miners",
    )
    parser.add_argument(
        "--metrics-public",
        action="store_true",
        default=os.environ.get("KERNELHUB_QUOTA_METRICS_PUBLIC") == "1",
        help="serve /metrics without a token (it names users and their GPU use); by default "
        "a hub token with read:metrics is required, as for the hub's own /hub/metrics",
    )
    parser.add_argument(
        "--contact",
        default=default_contact(),
        help="whom a flagged user is told to contact (default: $KERNELHUB_QUOTA_CONTACT, "
        f"else {DEFAULT_CONTACT!r}); users never see a flag's reason, only admins do",
    )
    parser.add_argument(
        "--proc",
        default=os.environ.get(PROC_ENV) or "/proc",
        help="the proc filesystem whose processes are read (default: $KERNELHUB_QUOTAD_PROC, "
        "else /proc); e.g. /host/proc, the node's /proc mounted read-only into a "
        "container without the host's PID namespace",
    )
    parser.add_argument(
        "--node-local",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get(NODE_LOCAL_ENV) == "1",
        help="one daemon per node of a cluster: account, judge and stop only the runtimes "
        "whose processes are on this node (default: $KERNELHUB_QUOTAD_NODE_LOCAL=1, else "
        "off: one daemon sees every runtime)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not os.path.lexists(os.path.join(args.proc, "self")):
        parser.error(f"--proc {args.proc!r} is not a proc filesystem (it has no 'self')")
    if not args.db_url:
        parser.error("--db-url (or KERNELHUB_QUOTA_DB_URL) is required")
    try:  # compose: the URL names no password; the password comes from a secret file
        args.db_url = url_with_password(args.db_url, secret_from_env(QUOTA_DB_PASSWORD_ENV))
    except SecretFileError as e:  # one line: argparse's usage text would say nothing more
        raise SystemExit(f"kernelhub-quotad: {e}") from None
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    if args.process_interval <= 0:
        parser.error("--process-interval must be > 0")
    args.contact = args.contact.strip()
    if not args.contact:
        parser.error("--contact must name someone, e.g. 'the GPU team (gpu-help@example.org)'")
    return args


def make_telemetry(spec: str, clock: SystemClock, pids: Sequence[str] = ()) -> GpuTelemetry:
    if spec == "nvml":
        from kernelhub.quotas.nvml import NvmlTelemetry

        return NvmlTelemetry(clock)
    if spec.startswith("replay:"):
        from kernelhub.quotas.replay import ReplayTelemetry

        pid_map = {int(a): int(b) for a, _, b in (p.partition("=") for p in pids)}
        return ReplayTelemetry(spec.removeprefix("replay:"), clock, loop=True, pid_map=pid_map)
    raise SystemExit(f"kernelhub-quotad: --telemetry must be nvml or replay:PATH, not {spec!r}")


def make_detector() -> Detector:
    from kernelhub.quotas.detector import MiningDetector

    return MiningDetector()


def default_rule(args: argparse.Namespace) -> Rule | None:
    hours = {"*": args.max_session_hours} if args.max_session_hours else None
    if hours is None and args.idle_minutes is None:
        return None
    return Rule(max_session_hours=hours, idle_minutes=args.idle_minutes)


def make_web_app(
    store: QuotaStore,
    metrics: QuotaMetrics,
    prefix: str,
    api_url: str,
    token: str,
    metrics_public: bool = False,
    contact: str = DEFAULT_CONTACT,
) -> web.Application:
    """The quota REST API (``kernelhub.quotas.api``) with ``/metrics`` beside it."""
    from jupyterhub.services.auth import HubAuth

    hub_auth = HubAuth(api_url=api_url, api_token=token, cache_max_age=60)
    options = {"metrics": metrics, "hub_auth": None if metrics_public else hub_auth}
    handlers: list[Any] = [(r"/metrics", MetricsHandler, options)]
    if prefix.rstrip("/"):
        handlers.append((prefix.rstrip("/") + "/metrics", MetricsHandler, options))
    app = make_app(store, hub_auth, prefix, contact=contact)
    # after the API's routes; its catch-all 404 only answers what no rule matches
    app.wildcard_router.add_rules(handlers)
    return app


async def serve(args: argparse.Namespace) -> None:
    api_url = os.environ.get("JUPYTERHUB_API_URL", "")
    try:  # JUPYTERHUB_API_TOKEN_FILE (compose's Docker secret), else JUPYTERHUB_API_TOKEN
        token = secret_from_env("JUPYTERHUB_API_TOKEN") or ""
    except SecretFileError as e:
        raise SystemExit(f"kernelhub-quotad: {e}") from None
    if not api_url or not token:
        raise SystemExit(
            "kernelhub-quotad: JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN must be set"
        )
    service_url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:0"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    clock = SystemClock()
    telemetry = make_telemetry(args.telemetry, clock, args.replay_pid)
    from kernelhub.quotas.nvml import NvmlTelemetry

    if isinstance(telemetry, NvmlTelemetry):
        await telemetry.open(log_unavailable=False)  # we say it ourselves, once, below
    if not telemetry.available:
        log.warning("GPU sampling is off (%s); everything else keeps working", telemetry.reason)
    metrics = QuotaMetrics()
    metrics.gpu_sampling.set(1 if telemetry.available else 0)
    try:
        store = QuotaStore.open(args.db_url)
    except QuotaStoreError as e:
        # one line (no password in it): in a stack, PostgreSQL may still be starting, and
        # the service's restart policy tries again
        raise SystemExit(f"kernelhub-quotad: {e}") from None
    hub = HubApi(api_url, token)  # the token goes to api_url and nowhere else
    daemon = QuotaDaemon(
        store,
        telemetry,
        hub,
        clock,
        interval=args.interval,
        account_period=args.account_period,
        process_interval=args.process_interval,
        scanner=ProcessScanner(proc=args.proc),
        metrics=metrics,
        default_limits=default_rule(args),
        detector=make_detector() if args.mining_detector else None,
        node_local=args.node_local,
    )
    app = make_web_app(store, metrics, prefix, api_url, token, args.metrics_public, args.contact)
    server = app.listen(service_url.port or 0, address=service_url.hostname or "127.0.0.1")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info(
        "kernelhub-quotad: every %g s, processes of %s%s, metrics on %s:%s%smetrics (%s)",
        args.interval,
        args.proc,
        " (this node's runtimes only)" if args.node_local else "",
        service_url.hostname,
        service_url.port,
        prefix,
        "public" if args.metrics_public else "token with read:metrics",
    )
    try:
        await daemon.run(stopping)
    finally:
        server.stop()
        await hub.close()
        close = getattr(telemetry, "close", None)
        if close is not None:
            await close()
        store.close()
        log.info("kernelhub-quotad stopped")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    # a line per hub call, every cycle: --log-level DEBUG shows the daemon's own
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
