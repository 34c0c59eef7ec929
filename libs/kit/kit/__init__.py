"""The shared leaf library: bootstrap, logging, settings, database, storage, errors.

Services import it; it imports no service.
"""
