#!/bin/sh
# Start the node's dockerd (its main process: the container lives as long as it does).
# Environment, all optional:
#   KERNELHUB_INSECURE_REGISTRIES  space-separated host:port registries to reach over HTTP
#   KERNELHUB_REGISTRY_FORWARD     LOCALPORT=HOST:PORT: serve the registry HOST:PORT on
#       127.0.0.1:LOCALPORT too, so that an image named 127.0.0.1:LOCALPORT/... is the same
#       name on this node as on the manager (engines trust loopback registries over HTTP)
#   KERNELHUB_EXTRA_SOCKET_DIR     a folder (bind-mounted from the host) where dockerd
#       opens a second socket, for the harness's client; never a TCP listener
#   KERNELHUB_SOCKET_GID           group of that socket (default: root)
set -eu
log() { echo "swarm-node: $*" >&2; }

# Without --privileged (the harness grants each capability the host's engine holds:
# one lacking a capability cannot run privileged containers at all), /sys and the
# cgroup hierarchies come read-only (and /proc/sys), and dockerd must write there
awk '$2 == "/sys" || $2 == "/proc/sys" || $2 ~ "^/sys/fs/cgroup" { split($4, o, ","); if (o[1] == "ro") print $2 }' \
    /proc/self/mounts | while read -r path; do
    mount -o remount,rw "$path" 2>/dev/null || mount -o remount,bind,rw "$path" \
        || log "$path stays read-only"
done

# cgroup v2: move this container's processes into a child group, so that dockerd may
# enable the controllers for its own children (what moby's hack/dind does)
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
        >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || log "cgroup v2 delegation failed"
fi
# AppArmor's profiles are found through securityfs, which a container does not mount
if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
    mount -t securityfs none /sys/kernel/security 2>/dev/null || log "no securityfs"
fi

# overlay2 needs /var/lib/docker on a file system overlayfs can stack on (a volume on
# the host's disk, not the container's overlay root): try a real overlay mount, else vfs
driver=vfs
probe=/var/lib/docker/.overlay-probe
rm -rf "$probe"
mkdir -p "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
if mount -t overlay overlay \
    -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" \
    2>/dev/null; then
    umount "$probe/merged"
    driver=overlay2
fi
rm -rf "$probe"
if [ "$driver" = vfs ]; then
    log "storage driver: vfs (overlayfs cannot stack on /var/lib/docker here; images are full copies)"
else
    log "storage driver: overlay2"
fi

set -- dockerd --storage-driver "$driver" --host unix:///var/run/docker.sock
for registry in ${KERNELHUB_INSECURE_REGISTRIES:-}; do
    set -- "$@" --insecure-registry "$registry"
done
if [ -n "${KERNELHUB_EXTRA_SOCKET_DIR:-}" ]; then
    set -- "$@" --host "unix://$KERNELHUB_EXTRA_SOCKET_DIR/docker.sock" \
        --group "${KERNELHUB_SOCKET_GID:-0}"
fi

if [ -n "${KERNELHUB_REGISTRY_FORWARD:-}" ]; then
    local_port=${KERNELHUB_REGISTRY_FORWARD%%=*}
    target=${KERNELHUB_REGISTRY_FORWARD#*=}
    log "registry: 127.0.0.1:$local_port -> $target"
    socat "TCP-LISTEN:$local_port,bind=127.0.0.1,reuseaddr,fork" "TCP:$target" &
fi

log "$*"
exec "$@"
