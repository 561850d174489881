"""Quota daemon (``kernelhub.quotas``): NVML accounting and culling. Arrives with its issue."""
