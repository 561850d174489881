"""Building runtime and service images (``kernelhub images``): a debootstrapped base,
source-hashed builds, package manifests. Never imported by the running hub.
"""
