"""Clients of other services, behind the domain's ports."""
