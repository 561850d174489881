#!/bin/sh
# The official postgres image's contract, for the parts kernelhub's compose file uses:
# on an empty data directory, initdb with POSTGRES_USER (default postgres) as the
# superuser, its password from POSTGRES_PASSWORD or the file POSTGRES_PASSWORD_FILE
# names, the database POSTGRES_DB (default: the user's name), then the scripts in
# /docker-entrypoint-initdb.d (*.sh run, *.sql fed to psql) against a server that
# listens on the local socket only; then the server itself.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    if [ ! -s "$POSTGRES_PASSWORD_FILE" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD_FILE $POSTGRES_PASSWORD_FILE is missing or empty" >&2
        exit 1
    fi
    pwfile=$POSTGRES_PASSWORD_FILE
else
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # the password reaches initdb as a file: never in argv, the environment of the
    # server, or the log
    initdb -D "$PGDATA" --encoding=UTF8 --locale=C --auth-local=trust \
        --auth-host=scram-sha-256 -U "$POSTGRES_USER" --pwfile="$pwfile" >/dev/null
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w start -o "-c listen_addresses=''" >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "postgres-entrypoint: running $f" >&2; sh "$f" ;;
            *.sql) echo "postgres-entrypoint: running $f" >&2
                psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f" ;;
            *) ;;  # the glob matched nothing, or a file of another kind
        esac
    done
    pg_ctl -D "$PGDATA" -w stop >/dev/null
fi
if [ -z "${POSTGRES_PASSWORD_FILE:-}" ]; then rm -f "$pwfile"; fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA"
