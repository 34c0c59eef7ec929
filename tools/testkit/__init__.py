"""Pytest fixtures that start the real infrastructure for the test suites."""
