"""kernelhub-socket-guard: the only holder of the Docker socket in the compose deployment.

It stands between the hub (and the quota daemon) and the engine, and lets through only
the calls the runtime spawner makes, with bodies read the way the engine reads them
(decode.py), routes and lookups decided in policy.py, the two create bodies checked in
bodies.py, and the HTTP service in server.py. Run it as ``kernelhub-socket-guard``.
"""
