#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d).
# One database per service, like `make run`, each owned by the service's own role, which
# is all a service logs in as: it owns its tables (and runs its migrations), cannot
# connect to the other's database, and is no superuser (the image's POSTGRES_USER is,
# and stays for the operator alone). The passwords come from the compose file.
set -eu
: "${GENERATION_DB_PASSWORD:?set GENERATION_DB_PASSWORD}"
: "${USAGE_DB_PASSWORD:?set USAGE_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v generation_password="$GENERATION_DB_PASSWORD" \
  -v usage_password="$USAGE_DB_PASSWORD" <<'SQL'
CREATE ROLE generation LOGIN PASSWORD :'generation_password';
CREATE ROLE usage LOGIN PASSWORD :'usage_password';
CREATE DATABASE generation OWNER generation;
CREATE DATABASE usage OWNER usage;
REVOKE ALL ON DATABASE generation FROM PUBLIC;
REVOKE ALL ON DATABASE usage FROM PUBLIC;
SQL
