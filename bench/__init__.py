"""``make bench``: the real system under load, every figure a ratio against its parts.

Run with ``python -m bench`` (``--quick`` for a short smoke run). See bench/README.md.
"""
