#!/bin/sh
# kernelhub's PostgreSQL roles, for the compose deployment's `postgres` service, which
# mounts this file into /docker-entrypoint-initdb.d/: it runs once, on an empty data
# directory, as the superuser ($POSTGRES_USER) over the local socket.
#
# - kernelhub: the hub. Owns the database (JupyterHub creates its tables in `public`);
#   reads the quota tables (SELECT only: spawn checks and notices), writes none.
# - kernelhub_quotad: the quota daemon. Owns the schema kernelhub_quotas, where its
#   migrations create the quota_* tables; no rights on anything of the hub's (users,
#   api_tokens, ...). It reads the host's processes, so it is the less trusted.
#
# The quota tables live in a schema of their own, not in `public`: the hub's
# connections never search a schema the daemon can write, so a function the daemon
# defines cannot stand in for one the hub's queries call. Only the hub's connection to
# the quota store (docker-compose.yml: ?options=-csearch_path=kernelhub_quotas) looks
# there, and it reads.
#
# Passwords come from the Docker secrets, read by psql itself (never in argv or logs).
# Re-runnable (it creates what is missing and resets the passwords from the files):
#   docker-compose exec postgres sh /docker-entrypoint-initdb.d/10-kernelhub-roles.sh

# a subshell: the official image sources scripts that are not executable, and nothing
# set here (options, variables) may leak into its entrypoint
kernelhub_roles() (
set -eu
secrets=/run/secrets
for name in hub_db_password quotad_db_password; do
    if [ ! -s "$secrets/$name" ]; then
        echo "kernelhub-roles: secret $secrets/$name is missing or empty: create it as the README's production section says" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc -q \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-kernelhub}" <<'SQL'
\set hub_password `cat /run/secrets/hub_db_password`
\set quotad_password `cat /run/secrets/quotad_db_password`
SET client_min_messages = warning;  -- a rerun's "already exists, skipping" is no news

SELECT 'CREATE ROLE kernelhub'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kernelhub') \gexec
SELECT 'CREATE ROLE kernelhub_quotad'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kernelhub_quotad') \gexec
ALTER ROLE kernelhub LOGIN PASSWORD :'hub_password';
ALTER ROLE kernelhub_quotad LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    PASSWORD :'quotad_password';

-- the hub owns the database, and with it (PostgreSQL 15+) the `public` schema
ALTER DATABASE :"DBNAME" OWNER TO kernelhub;
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO kernelhub_quotad;

CREATE SCHEMA IF NOT EXISTS kernelhub_quotas AUTHORIZATION kernelhub_quotad;
ALTER ROLE kernelhub_quotad IN DATABASE :"DBNAME" SET search_path = kernelhub_quotas;
REVOKE CREATE ON SCHEMA public FROM kernelhub_quotad;
GRANT USAGE ON SCHEMA kernelhub_quotas TO kernelhub;
-- what the daemon's migrations create, the hub may read
ALTER DEFAULT PRIVILEGES FOR ROLE kernelhub_quotad IN SCHEMA kernelhub_quotas
    GRANT SELECT ON TABLES TO kernelhub;
GRANT SELECT ON ALL TABLES IN SCHEMA kernelhub_quotas TO kernelhub;
SQL
echo "kernelhub-roles: roles kernelhub and kernelhub_quotad ready" >&2
)
kernelhub_roles
