"""What a runtime is: runtime types and their validation, the catalog the hub offers, GPUs
and their assignment, drives, and the Docker engine checks made before spawning.
"""
