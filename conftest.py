"""Root conftest: the shared fixtures for every suite in the repository."""

pytest_plugins = ["testkit.plugin"]
