# kernelhub configuration for the compose deployment (docker-compose.yml mounts it).
# The hub runs in a container: runtimes join the `kernelhub-runtimes` network and
# reach the hub by its service name there.
c = get_config()  # noqa: F821

c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_port = 8081  # where the quotad service finds the hub's API
c.JupyterHub.hub_connect_ip = "hub"
c.DockerRuntimeSpawner.network_name = "kernelhub-runtimes"
c.DockerRuntimeSpawner.use_internal_ip = True
