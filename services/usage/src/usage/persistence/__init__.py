"""Tables, repositories (all the SQL) and the Alembic migrations of the usage service."""
