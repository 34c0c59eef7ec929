-- One-off, for a compose PostgreSQL volume made before the services had their own roles
-- (init-databases.sh runs only on an empty data directory). As POSTGRES_USER:
--
--   docker compose -f deploy/docker-compose.yml exec -T postgres \
--     psql -v ON_ERROR_STOP=1 -U interior -d interior \
--     -v generation_password="$GENERATION_DB_PASSWORD" -v usage_password="$USAGE_DB_PASSWORD" \
--     < deploy/postgres/upgrade-to-service-roles.sql
--
-- It creates the two roles, gives each its database and everything in it (tables with
-- their indexes, triggers and owned sequences, other sequences, views, functions), and
-- takes the databases from PUBLIC: afterwards every service logs in as its own role,
-- which owns what its migrations change. Safe to run before the new release starts.
\set ON_ERROR_STOP on
CREATE ROLE generation LOGIN PASSWORD :'generation_password';
CREATE ROLE usage LOGIN PASSWORD :'usage_password';
ALTER DATABASE generation OWNER TO generation;
ALTER DATABASE usage OWNER TO usage;
REVOKE ALL ON DATABASE generation FROM PUBLIC;
REVOKE ALL ON DATABASE usage FROM PUBLIC;

\connect generation
\set role generation
\ir give-schema-to-role.sql

\connect usage
\set role usage
\ir give-schema-to-role.sql
