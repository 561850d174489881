# kernelhub configuration for the compose deployment (docker-compose.yml mounts it).
# The hub runs in a container: runtimes join the `kernelhub-runtimes` network and
# reach the hub by its service name there.
import json
import os

from kernelhub.runtimes.types import parse_runtime_types
from kernelhub.secrets_files import secret_from_env, url_with_password

c = get_config()  # noqa: F821

c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_port = 8081  # where the quotad service finds the hub's API
c.JupyterHub.hub_connect_ip = "hub"
c.DockerRuntimeSpawner.network_name = os.environ.get(
    "KERNELHUB_RUNTIMES_NETWORK", "kernelhub-runtimes"
)
c.DockerRuntimeSpawner.use_internal_ip = True

# The database, as the role `kernelhub` (images/hub/postgres-roles.sh), its password
# from the Docker secret KERNELHUB_DB_PASSWORD_FILE names: no password in the
# container's environment. A missing or empty file stops the start with one line.
_database = os.environ.get("KERNELHUB_DATABASE", "postgresql://kernelhub@postgres/kernelhub")
_db_url = url_with_password(_database, secret_from_env("KERNELHUB_DB_PASSWORD"))
c.JupyterHub.db_url = _db_url
# The quota daemon's store: its tables in the schema kernelhub_quotas, which only these
# connections search (and only read: the role may SELECT there, nothing else), so the
# hub's own queries never meet anything the daemon's role created.
c.QuotaGate.db_url = f"{_db_url}?options=-csearch_path%3Dkernelhub_quotas"

# Docker Swarm (docker-stack.yml): the registry every node pulls runtime images from,
# and the shared filesystem every node (and this container) mounts the drives from
# (unset: node-local drive volumes, every runtime on the manager the hub talks to)
if os.environ.get("KERNELHUB_IMAGE_REGISTRY"):
    c.SwarmRuntimeSpawner.image_registry = os.environ["KERNELHUB_IMAGE_REGISTRY"]
if os.environ.get("KERNELHUB_DRIVE_ROOT"):
    c.SwarmRuntimeSpawner.drive_root = os.environ["KERNELHUB_DRIVE_ROOT"]
# every runtime waits for its node's runtime-firewall (docker-stack.yml) to lock it down
# before its server starts: a node without one fails the spawn, never runs it unguarded
c.SwarmRuntimeSpawner.await_network_lockdown = 60

# The runtime types users choose from (RuntimeCatalog.runtime_types) as a JSON list, when
# KERNELHUB_RUNTIME_TYPES_JSON is set (docker-stack.yml hands it to the hub): images other
# than the defaults without a config file of one's own. Checked here, so a bad list stops
# the start with one line naming the entry at fault, not the first spawn.
_runtime_types = os.environ.get("KERNELHUB_RUNTIME_TYPES_JSON", "").strip()
if _runtime_types:
    try:
        _parsed_types = json.loads(_runtime_types)
    except json.JSONDecodeError as e:
        raise ValueError(f"KERNELHUB_RUNTIME_TYPES_JSON is not JSON: {e}") from None
    if not isinstance(_parsed_types, list):
        raise ValueError("KERNELHUB_RUNTIME_TYPES_JSON must be a JSON list of runtime types")
    parse_runtime_types(_parsed_types)
    c.RuntimeCatalog.runtime_types = _parsed_types
