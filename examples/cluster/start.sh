#!/bin/sh
# Three pypacs nodes over one PostgreSQL index and one object store, behind haproxy.
#
#   examples/cluster/start.sh        then   examples/cluster/stop.sh
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, trust), pypacs with the s3 and
# postgresql extras, moto (python -m moto.server), haproxy. Everything a run makes (logs,
# pid files, each node's folder, moto's state) goes under $WORK; the database stays.
# The defaults below are those of node*.toml and haproxy.cfg; each can be changed through
# the environment (the tests run it on free ports).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/pypacs-cluster}
PYTHON=${PYTHON:-python3}
PYPACS=${PYPACS:-"$PYTHON -m pypacs"}
PG=${PG:-postgresql+psycopg://postgres@127.0.0.1:5432}
DB_NAME=${DB_NAME:-pypacs_cluster}
S3_PORT=${S3_PORT:-5000}
export DICOM_PORT=${DICOM_PORT:-11112} HTTP_PORT=${HTTP_PORT:-8080}
export NODE1_DICOM_PORT=${NODE1_DICOM_PORT:-11113} NODE1_HTTP_PORT=${NODE1_HTTP_PORT:-8081}
export NODE2_DICOM_PORT=${NODE2_DICOM_PORT:-11114} NODE2_HTTP_PORT=${NODE2_HTTP_PORT:-8082}
export NODE3_DICOM_PORT=${NODE3_DICOM_PORT:-11115} NODE3_HTTP_PORT=${NODE3_HTTP_PORT:-8083}
# moto takes any credentials; for MinIO or S3, export your own before running this.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-cluster-example}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-cluster-example-secret}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}

mkdir -p "$WORK"

wait_until() { # seconds, what, command...
    seconds=$1 what=$2
    shift 2
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt $((seconds * 5)) ]; then
            echo "start.sh: $what did not come up; see $WORK" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# 1. The index: one PostgreSQL database for all nodes (the first node creates the tables).
pg_host=${PG#*@}
pg_port=${pg_host#*:}
pg_host=${pg_host%:*}
psql="psql -h $pg_host -p $pg_port -U postgres -v ON_ERROR_STOP=1 -tAq"
if [ -z "$($psql -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    $psql -c "CREATE DATABASE \"$DB_NAME\""
fi

# 2. The object store, and its bucket.
$PYTHON -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
echo $! >"$WORK/moto.pid"
S3=http://127.0.0.1:$S3_PORT
wait_until 60 "moto_server" curl -fsS "$S3/moto-api/"
curl -fsS -X PUT "$S3/pypacs" >/dev/null

# 3. The nodes, the first alone until it listens (it makes the schema).
start_node() { # n dicom-port http-port
    rm -f "$WORK/node$1.out"
    $PYPACS serve --config "$HERE/node$1.toml" --data "$WORK/node$1" \
        --dicom-port "$2" --http-port "$3" \
        --database-url "$PG/$DB_NAME" --s3-endpoint-url "$S3" \
        >"$WORK/node$1.out" 2>"$WORK/node$1.log" &
    echo $! >"$WORK/node$1.pid"
    wait_until 120 "node $1 (log: $WORK/node$1.log)" grep -q '^listening' "$WORK/node$1.out"
}
start_node 1 "$NODE1_DICOM_PORT" "$NODE1_HTTP_PORT"
start_node 2 "$NODE2_DICOM_PORT" "$NODE2_HTTP_PORT"
start_node 3 "$NODE3_DICOM_PORT" "$NODE3_HTTP_PORT"

# 4. haproxy in front.
haproxy -D -f "$HERE/haproxy.cfg" -p "$WORK/haproxy.pid" >"$WORK/haproxy.log" 2>&1
wait_until 30 "haproxy" curl -fsS "http://127.0.0.1:$HTTP_PORT/api/health"

echo "DICOM  127.0.0.1:$DICOM_PORT (AE title PYPACS)   e.g. echoscu -aec PYPACS 127.0.0.1 $DICOM_PORT"
echo "HTTP   http://127.0.0.1:$HTTP_PORT/   (DICOMweb at /dicom-web)"
echo "nodes  DICOM $NODE1_DICOM_PORT $NODE2_DICOM_PORT $NODE3_DICOM_PORT, HTTP $NODE1_HTTP_PORT $NODE2_HTTP_PORT $NODE3_HTTP_PORT"
echo "index  $PG/$DB_NAME   objects s3://pypacs/cluster at $S3   logs $WORK"
