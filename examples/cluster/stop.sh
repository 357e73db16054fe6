#!/bin/sh
# Stop what start.sh started (haproxy, the three nodes, moto_server), by their pid files
# under $WORK. The database is kept: DROP=1 drops it too.
set -eu

WORK=${WORK:-/tmp/pypacs-cluster}
PG=${PG:-postgresql+psycopg://postgres@127.0.0.1:5432}
DB_NAME=${DB_NAME:-pypacs_cluster}

for name in haproxy node1 node2 node3 moto; do
    pidfile=$WORK/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 150 ]; do
            i=$((i + 1))
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    fi
    rm -f "$pidfile"
    echo "stopped $name"
done

if [ "${DROP:-0}" = 1 ]; then
    pg_host=${PG#*@}
    psql -h "${pg_host%:*}" -p "${pg_host#*:}" -U postgres -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)"
    echo "dropped database $DB_NAME"
fi
