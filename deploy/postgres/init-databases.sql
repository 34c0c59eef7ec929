-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d).
-- One database per service, like `make run`: each service owns its tables.
CREATE DATABASE generation;
CREATE DATABASE usage;
