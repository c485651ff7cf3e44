#!/usr/bin/env bash
# Redis CPU per message of two versions of the counter's increment script, in steady state
# (the same sessions counting up, one attempt after another, as wsfleet sends them): the cost of
# a change to INCREMENT_BATCH_LUA, measured apart from everything else (docs/BENCHMARKS.md,
# "What fencing costs").
#
#   bash scripts/bench-tools/increment-ab.sh [OLD_REV] [BATCH] [CALLS]
#     OLD_REV=36ddc0a  the commit whose src/counter.rs holds the script before fencing
#     BATCH=16         messages per script call; CALLS=20000 calls per run; 3 runs of each
#
# Starts its own redis-server on a free loopback port (no persistence) and stops it by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
old_rev=${1:-36ddc0a} batch=${2:-16} calls=${3:-20000}
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 git
lua_of() { # CONST FILE...: the raw-string Lua constant, as the server sends it
    awk -v name="$1" 'index($0, "const " name ": &str = r\"") { on = 1; sub(/.*= r"/, ""); if ($0 == "") next }
        on && /^[^"]*";$/ { sub(/";$/, ""); if ($0 != "") print; exit } on { print }' "${@:2}"
}
git show "$old_rev:src/counter.rs" >"$dir/old.rs"
lua_of INCREMENT_BATCH_LUA "$dir/old.rs" >"$dir/old.lua"
lua_of INCREMENT_BATCH_LUA src/counter/scripts.rs >"$dir/new.lua"
port=$(free_port)
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes --pidfile "$dir/redis.pid" >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
run() { # KIND
    redis-cli -p "$port" flushall >/dev/null
    local sha pid before after
    sha=$(redis-cli -p "$port" script load "$(cat "$dir/$1.lua")")
    python3 scripts/bench-tools/increment-calls.py "$sha" "$1" "$calls" "$batch" 1000 >"$dir/$1.resp"
    pid=$(cat "$dir/redis.pid")
    before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    redis-cli -p "$port" --pipe <"$dir/$1.resp" >"$dir/$1.out" 2>&1
    grep -q 'errors: 0' "$dir/$1.out" || { cat "$dir/$1.out" >&2; exit 1; }
    after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    # utime + stime are in clock ticks (1/100 s): ns per message.
    echo "$1 (batch $batch): $(((after - before) * 10000000 / (calls * batch))) ns of Redis CPU per message"
}
for _ in 1 2 3; do run old; run new; done
