"""``kernelhub up``: chooses the runtime backend and sign-in, keeps the data directory's
credentials and hub state, builds the JupyterHub config and runs the hub.
"""
