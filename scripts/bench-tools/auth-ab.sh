#!/usr/bin/env bash
# What authentication costs (issue 13, docs/BENCHMARKS.md): the closed loop and the connect
# rate of one instance with AUTH_SECRET (every socket carries an HS256 token, verified once at
# its upgrade) against the same instance without, alternating, ROUNDS runs of each.
#
#   bash scripts/bench-tools/auth-ab.sh [ROUNDS=3] [CONNECTIONS=1000] [MESSAGES=200]
#
# Release build; its own redis-server and two instances on free loopback ports, stopped by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3} connections=${2:-1000} messages=${3:-200}
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 curl
cargo build --release --quiet -p wsfleet -p wsfleet-loadtest
redis_port=$(free_port) on_port=$(free_port) off_port=$(free_port)
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" >/dev/null
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
start() { # PORT [AUTH_SECRET]
    local auth=()
    [ -z "${2:-}" ] || auth=("AUTH_SECRET=$2")
    env BIND_ADDR="127.0.0.1:$1" REDIS_URL="redis://127.0.0.1:$redis_port" RATE_LIMIT=0 \
        "${auth[@]}" target/release/wsfleet >"$dir/node-$1.log" 2>&1 &
    pids+=("$!")
}
start "$on_port" "$secret"
start "$off_port"
for port in "$on_port" "$off_port"; do
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 ||
        { echo "error: the instance on port $port did not get ready:" >&2; cat "$dir/node-$port.log" >&2; exit 1; }
done
value() { target/release/wsfleet-loadtest summarize value "$1" "$2"; }
run() { # NAME PORT [SECRET] -> "msg/s connects/s"
    local json="$dir/$1.json"
    local auth=()
    [ -z "${3:-}" ] || auth=(--auth-secret "$3")
    target/release/wsfleet-loadtest closed-loop "${auth[@]}" \
        --connections "$connections" --messages "$messages" \
        --url "ws://127.0.0.1:$2/ws/chat/" --json "$json" >/dev/null
    echo "$(value "$json" messages.per_second) $(value "$json" connections.per_second)"
}
echo "round  auth-on msg/s connects/s   auth-off msg/s connects/s"
for i in $(seq "$rounds"); do
    echo "$i      $(run "on-$i" "$on_port" "$secret")   $(run "off-$i" "$off_port")"
done
