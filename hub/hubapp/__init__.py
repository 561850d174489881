"""Runs inside the JupyterHub process: the hub application, kernelhub's REST handlers, JSON
refusals, page templates and the OpenAPI document.
"""
