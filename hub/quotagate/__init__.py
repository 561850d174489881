"""The hub's read side of quotas: the spawn check against the quota store, and the notices
shown on the home page and in the notebook. The quota daemon (``kernelhub.quotas``) owns
the store.
"""
