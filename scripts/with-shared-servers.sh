#!/usr/bin/env bash
# Runs a command with one Redis, one DynamoDB emulator (and moto, the one with DynamoDB Streams)
# and one Consul agent shared by every test,
# as a team's CI server or a developer's long-running servers would be:
#
#   scripts/with-shared-servers.sh scripts/test.sh
#
# It starts redis-server, dynalite, moto_server and a consul dev agent on free 127.0.0.1 ports,
# exports FLAGSTORE_TEST_REDIS_URL, FLAGSTORE_TEST_DYNAMODB_ENDPOINT, FLAGSTORE_TEST_MOTO_ENDPOINT
# and FLAGSTORE_TEST_CONSUL_ADDR for the command, and stops them (by PID) when it ends. Every test must keep to its own prefix,
# table or database, so the suite passes on servers it shares: this is how CI keeps that true.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
    echo "usage: scripts/with-shared-servers.sh COMMAND [ARGS...]" >&2
    exit 2
fi
scripts/install-servers.sh

dir="$(mktemp -d)"
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap stop EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `$2` (a command) succeeds, for at most 30 s; names `$1` if it never does.
wait_for() {
    local name="$1"; shift
    for _ in $(seq 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "with-shared-servers: $name did not start; its log:" >&2
    cat "$dir/$name.log" >&2 || true
    exit 1
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=("$!")
wait_for redis redis-cli -p "$redis_port" ping

dynamo_port="$(free_port)"
dynalite --port "$dynamo_port" --host 127.0.0.1 >"$dir/dynalite.log" 2>&1 &
pids+=("$!")
wait_for dynalite python3 -c "import socket; socket.create_connection(('127.0.0.1', $dynamo_port), 1)"

moto_port="$(free_port)"
"${FLAGSTORE_VENV:-$HOME/.cache/flagstore/venv}/bin/moto_server" -H 127.0.0.1 -p "$moto_port" \
    >"$dir/moto.log" 2>&1 &
pids+=("$!")
wait_for moto python3 -c "import socket; socket.create_connection(('127.0.0.1', $moto_port), 1)"

consul_http="$(free_port)"
consul agent -dev -node "flagstore-shared-$consul_http" -bind=127.0.0.1 -client=127.0.0.1 \
    -http-port="$consul_http" -dns-port=-1 -grpc-port=-1 -serf-lan-port="$(free_port)" \
    -serf-wan-port="$(free_port)" -server-port="$(free_port)" >"$dir/consul.log" 2>&1 &
pids+=("$!")
wait_for consul python3 -c "
import urllib.request
urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$consul_http/v1/kv/ready', data=b'1', method='PUT'), timeout=1)"

export FLAGSTORE_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export FLAGSTORE_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$dynamo_port"
export FLAGSTORE_TEST_CONSUL_ADDR="http://127.0.0.1:$consul_http"
export FLAGSTORE_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
echo "with-shared-servers: Redis $FLAGSTORE_TEST_REDIS_URL, DynamoDB $FLAGSTORE_TEST_DYNAMODB_ENDPOINT, moto $FLAGSTORE_TEST_MOTO_ENDPOINT, Consul $FLAGSTORE_TEST_CONSUL_ADDR"
status=0
"$@" || status=$?
exit "$status"
