"""HTTP routes, one module per resource.

Routers carry their full path prefix themselves, so each route's template (used
in the access log) is the complete path.
"""

API_PREFIX = "/api/v1"
