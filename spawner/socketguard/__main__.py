"""``kernelhub-socket-guard``: serve the Docker API over TCP, guarded, from the unix socket.

    kernelhub-socket-guard --listen 0.0.0.0:2375 --network kernelhub-runtimes

An address may be a unix socket (``unix:/run/kernelhub-guard/quotad.sock``): on a node
of a cluster, the quota daemon's read-only view is then reachable from that node only,
by whoever ``--unix-owner`` and ``--unix-mode`` let connect.

SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from tornado import httpserver, netutil

from kernelhub.contract import IMAGE_KIND_LABEL

from .policy import GuardConfig
from .server import Engine, make_app

log = logging.getLogger("kernelhub.socketguard")
DEFAULTS = GuardConfig()
UNIX = "unix:"
Address = tuple[str, int] | str  # (host, port), or a unix socket's path


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, GuardConfig]:
    parser = argparse.ArgumentParser(
        prog="kernelhub-socket-guard",
        description="A Docker API proxy that lets through only kernelhub's runtime "
        "spawner's calls (README: Production deployment).",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:2375",
        metavar="HOST:PORT|unix:PATH",
        help="where to serve the guarded API (default: %(default)s)",
    )
    parser.add_argument(
        "--read-only-listen",
        metavar="HOST:PORT|unix:PATH",
        help="also serve a read-only view there, for the quota daemon: ping, version, "
        "listing and inspecting runtime containers, with their environment (which holds "
        "each runtime's own hub token) left out (default: none)",
    )
    parser.add_argument(
        "--unix-owner",
        metavar="UID[:GID]",
        help="who owns the read-only view's unix socket (default: the guard's own user): "
        "the quota daemon's user, e.g. 10002, so that it may connect and nobody else; "
        "a --listen unix socket stays the guard's user's alone (mode 600)",
    )
    parser.add_argument(
        "--unix-mode",
        type=lambda v: int(v, 8),
        default=0o600,
        metavar="OCTAL",
        help="the read-only view's unix socket's permissions (default: 600: its owner "
        "only; 660 lets the owner's group in too)",
    )
    parser.add_argument(
        "--socket",
        default="/var/run/docker.sock",
        help="the engine's unix socket (default: %(default)s)",
    )
    parser.add_argument(
        "--network",
        action="append",
        dest="networks",
        metavar="NAME",
        help="a network runtimes may join; repeat for more "
        f"(default: {', '.join(DEFAULTS.networks)})",
    )
    parser.add_argument(
        "--image",
        action="append",
        dest="images",
        default=[],
        metavar="REF",
        help="an image runtimes may use besides those labelled "
        f"{IMAGE_KIND_LABEL}={'/'.join(DEFAULTS.image_kinds)}; repeat for more",
    )
    parser.add_argument(
        "--drive-name-template",
        default=DEFAULTS.drive_name_template,
        help="DockerRuntimeSpawner.drive_name_template, as the hub is configured "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--site-snippets-volume",
        default=DEFAULTS.site_snippets_volume,
        help="DockerRuntimeSpawner.site_snippets_volume (default: %(default)s)",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULTS.prefix,
        help="DockerSpawner.prefix: runtime container names start with PREFIX- "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--image-registry",
        default="",
        metavar="HOST:PORT",
        help="SwarmRuntimeSpawner.image_registry: a runtime service's image must be "
        "HOST:PORT/<a runtime image of this engine's> (default: none; then no image may "
        "name a registry)",
    )
    parser.add_argument(
        "--drive-root",
        default="",
        metavar="PATH",
        help="SwarmRuntimeSpawner.drive_root: a runtime service may bind its user's drive "
        "folder PATH/<drive name> (default: none; drives are volumes)",
    )
    parser.add_argument(
        "--max-pids",
        type=int,
        default=DEFAULTS.max_pids,
        help="the largest HostConfig.PidsLimit a runtime may have (default: %(default)s)",
    )
    parser.add_argument(
        "--no-require-lockdown",
        dest="require_lockdown",
        action="store_false",
        help="let through containers without CapDrop ALL, no-new-privileges and a "
        "PidsLimit (for a hub older than this guard)",
    )
    parser.add_argument(
        "--max-body",
        type=int,
        default=DEFAULTS.max_body,
        help="the largest request body in bytes; larger ones get 413 (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    args = parser.parse_args(argv)
    args.address = _address(parser, "--listen", args.listen)
    # (host, port) of a TCP --listen, as before unix sockets; None, None for a socket
    args.host, args.port = args.address if isinstance(args.address, tuple) else (None, None)
    args.read_only = (
        _address(parser, "--read-only-listen", args.read_only_listen)
        if args.read_only_listen
        else None
    )
    args.owner = _owner(parser, args.unix_owner)
    if not 0 <= args.unix_mode <= 0o777:
        parser.error(f"--unix-mode {oct(args.unix_mode)} is not a permission mode")
    try:
        config = GuardConfig(
            networks=tuple(args.networks or DEFAULTS.networks),
            images=tuple(args.images),
            drive_name_template=args.drive_name_template,
            site_snippets_volume=args.site_snippets_volume,
            prefix=args.prefix,
            require_lockdown=args.require_lockdown,
            max_pids=args.max_pids,
            max_body=args.max_body,
            image_registry=args.image_registry,
            drive_root=args.drive_root,
        )
    except ValueError as e:
        parser.error(str(e))
    return args, config


def _address(parser: argparse.ArgumentParser, flag: str, value: str) -> Address:
    if value.startswith(UNIX):
        path = value.removeprefix(UNIX)
        if not os.path.isabs(path):
            parser.error(f"{flag} {value!r}: a unix socket needs an absolute path")
        return path
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"{flag} {value!r} is not HOST:PORT or unix:PATH")
    return host.strip("[]") or "0.0.0.0", int(port)


def _owner(parser: argparse.ArgumentParser, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    uid, _, gid = value.partition(":")
    if not uid.isdigit() or not (gid.isdigit() or gid == ""):
        parser.error(f"--unix-owner {value!r} is not UID or UID:GID (numbers)")
    return int(uid), int(gid) if gid else -1  # -1: chown leaves the group


def _shown(address: Address) -> str:
    return f"{UNIX}{address}" if isinstance(address, str) else f"{address[0]}:{address[1]}"


def _listen(
    server: httpserver.HTTPServer,
    address: Address,
    owner: tuple[int, int] | None,
    mode: int,
) -> None:
    if not isinstance(address, str):
        server.listen(address[1], address[0])
        return
    # bound with the mode already applied (no moment in which anyone may connect),
    # then handed to its owner; a stale socket from an earlier run is replaced
    sock = netutil.bind_unix_socket(address, mode=mode)
    if owner is not None:
        os.chown(address, *owner)
    server.add_socket(sock)


def _unlink(address: Address) -> None:
    if isinstance(address, str):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)


async def serve(args: argparse.Namespace, config: GuardConfig) -> None:
    engine = Engine(args.socket)
    servers = []
    listens: list[tuple[GuardConfig, Address]] = [(config, args.address)]
    if args.read_only:
        listens.append((replace(config, read_only=True), args.read_only))
    for served, address in listens:
        # the spawner's address is the guard's user's alone; the read-only one its reader's
        owner, mode = (args.owner, args.unix_mode) if served.read_only else (None, 0o600)
        server = httpserver.HTTPServer(
            make_app(served, engine),
            # bodies stream into the handler, which answers 413 past config.max_body;
            # this is only the connection's hard cap
            max_body_size=64 * config.max_body,
        )
        try:
            _listen(server, address, owner, mode)
        except (OSError, ValueError) as e:  # in use, not a socket, no such directory
            where = _shown(address)
            raise SystemExit(f"kernelhub-socket-guard: cannot listen on {where}: {e}") from None
        servers.append(server)
    if args.read_only:
        log.info("read-only view for the quota daemon on %s", _shown(args.read_only))
    log.info(
        "guarding %s on %s (networks: %s)",
        args.socket, _shown(args.address), ", ".join(config.networks),
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.stop()
    for _, address in listens:
        _unlink(address)
    await engine.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    args, config = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    for chatty in ("httpx", "httpcore"):  # a line per forwarded call: --log-level DEBUG has ours
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if not os.path.exists(args.socket):
        sys.exit(f"kernelhub-socket-guard: no Docker socket at {args.socket} (--socket)")
    asyncio.run(serve(args, config))


if __name__ == "__main__":
    main()
