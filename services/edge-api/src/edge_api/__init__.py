"""The edge HTTP API: the public REST + multipart API under ``/api/v1``.

It authenticates users, validates and streams requests, calls the generation and
usage services over gRPC and maps their errors to HTTP.
"""
