"""The compose deployment, brought up once for the tests of this package (conftest.py)."""
