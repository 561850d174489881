"""The quota daemon, kernelhub-quotad (``kernelhub.quotas``): GPU and process telemetry,
accounting in the quota store (which it owns and migrates), policy, mining detection,
culling, its REST API and metrics."""
