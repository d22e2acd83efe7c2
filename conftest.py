"""Registers the shared server fixtures for every test (pytest_plugins must live in the root conftest)."""

pytest_plugins = ("tests.server_fixtures",)
