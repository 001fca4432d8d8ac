"""Real servers on loopback for the test suite, started once per session by fixtures.

The fixtures live in `tests.harness.plugin` (loaded by tests/conftest.py); the modules
here start and stop the servers and hold the helpers tests use to talk to them.
"""
