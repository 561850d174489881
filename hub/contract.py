"""What the spawners, the hub and the quota daemon agree on, written once.

The spawners label runtime containers and set runtime environments; the quota daemon
reads the same labels and variables back to learn whose runtime a process is; the hub,
the daemon and the spawners all name a runtime by the same key. Each of them imports
these names from here, so the two sides cannot drift apart.
"""

from __future__ import annotations

# ---- container and volume labels -------------------------------------------------------
LABEL_PREFIX = "org.kernelhub"
USER_LABEL = f"{LABEL_PREFIX}.user"  # the hub user whose runtime the container is
SERVER_LABEL = f"{LABEL_PREFIX}.server"  # the server name ("" for the default server)
RUNTIME_TYPE_LABEL = f"{LABEL_PREFIX}.runtime-type"
GPUS_LABEL = f"{LABEL_PREFIX}.gpus"  # comma-separated GPU indexes or UUIDs assigned to it
# cores the runtime may use ("" when unlimited): the daemon judges "full CPU" against it
CPU_LIMIT_LABEL = f"{LABEL_PREFIX}.cpu-limit"
DRIVE_LABEL = f"{LABEL_PREFIX}.drive-of"  # on a drive volume: the user it belongs to
# on an image kernelhub built from images/NAME: NAME (the socket guard admits runtime images
# by it: `LABEL org.kernelhub.image=...` in each Dockerfile)
IMAGE_KIND_LABEL = f"{LABEL_PREFIX}.image"
# on a runtime image: the command that starts its server in place of the image's CMD
LAUNCHER_LABEL = f"{LABEL_PREFIX}.launcher"
# on a warm runtime (made before its user pressed Start, not yet claimed by a spawn): the
# fingerprint of the spawn it was made for; only a spawn with the same one may claim it
WARM_LABEL = f"{LABEL_PREFIX}.warm"
# on a built image: the hash of its sources and base images (a rebuild is skipped on a match)
SOURCE_HASH_LABEL = f"{LABEL_PREFIX}.source-hash"

# ---- environment variables ---------------------------------------------------------------
RUNTIME_TYPE_ENV = "KERNELHUB_RUNTIME_TYPE"  # set in every runtime: its runtime type's name
QUOTA_DB_ENV = "KERNELHUB_QUOTA_DB_URL"  # the quota store (hub: read-only; daemon: owner)
# whom a flagged user is told to contact (the hub's spawn refusal and the quota API alike)
QUOTA_CONTACT_ENV = "KERNELHUB_QUOTA_CONTACT"

# a warm runtime's launcher (images/common/kernelhub-runtime, which cannot import this):
# the secret an activation must carry, the port it listens on, and when it gives up
WARM_SECRET_ENV = "KERNELHUB_WARM_SECRET"
WARM_PORT_ENV = "KERNELHUB_WARM_PORT"
WARM_TTL_ENV = "KERNELHUB_WARM_TTL"

# ---- the hub's user_options ---------------------------------------------------------------
RUNTIME_OPTION = "runtime"  # user_options[RUNTIME_OPTION] is the runtime type's name

# ---- a local runtime's spawner state (read by the daemon through the hub's REST API) ------
# The sandbox's outermost process: every process of the runtime descends from it (its PID
# namespace reparents orphans to the sandbox's init), so the daemon attributes a local
# process by ancestry from here, never by environment variables the user can set.
LOCAL_PID_STATE = "pid"
# that process's start time (clock ticks since boot, /proc/PID/stat field 22): a reused
# PID is not mistaken for the runtime
LOCAL_PID_START_STATE = "pid_start"

# ---- the quota daemon as a JupyterHub service ------------------------------------------------
QUOTA_SERVICE = "kernelhub-quotas"
QUOTA_SERVICE_PREFIX = f"/services/{QUOTA_SERVICE}/"


def runtime_key(user: str, server: str) -> str:
    """One runtime's name everywhere: GPU holders, quota accounting cursors, events."""
    return f"{user}/{server}"
