#!/usr/bin/env bash
# scripts/bench.sh (make bench): measures wsfleet against its ceilings and writes the record.
#
#   scripts/bench.sh [all|SECTION...]      SECTION: closed-loop redis startup sigterm
#                                          nginx-closed nginx-open hold fan-out promote faults
#                                          rooms rooms-promote
#
# Starts everything it needs on loopback ports of its own, in its own run directory
# (.run/bench), so a `make up` fleet is never touched: redis-server, wsfleet instances,
# wsfleet-ceiling instances (ceiling/src/main.rs: the same protocol without
# Redis) and nginx (scripts/lib-nginx.sh and nginx/ templates, limits raised). Pairs
# (wsfleet, ceiling) run alternately BENCH_REPEATS times and are reported as medians and ratios.
# Each section writes docs/benchmarks/sections/NN-SECTION.md; docs/benchmarks/results.md is
# assembled from all of them (the analysis is by hand in docs/BENCHMARKS.md). A section the load
# tester cannot run yet (a missing subcommand or flag) is recorded as "not run" with the reason.
# Everything started is stopped by pid on any exit; every run is bounded by BENCH_TIMEOUT.
#
# Settings (environment):
#   BENCH_REPEATS=3           runs of each side of a pair (medians of these; the closed loop
#                             runs at least 5, its runs last 1-2 s)
#   BENCH_TIMEOUT=300         seconds one load-tester run may take
#   BENCH_QUIET_WAIT=60       seconds to wait for the machine to calm down before each section
#   BENCH_REDIS_PORT=6390  BENCH_NGINX_PORT=8190  BENCH_BASE_PORT=8101   ports of our own
#   BENCH_RUN_DIR=.run/bench  BENCH_OUT=$BENCH_RUN_DIR/out    run state; reports and logs
#   BENCH_PROFILE=0           1: one more wsfleet closed loop (not in the medians) under perf
#   SKIP_BUILD=1              use the binaries already built (CARGO_TARGET_DIR)
#   ROOMS_SMOKE=1             the rooms section at tiny sizes (checks it runs; not a measurement)
#   ROOMS_PROMOTE_SMOKE=1     the rooms-promote section (issue 12) at tiny sizes, likewise
set -euo pipefail
# The bench's own run directory, whatever RUN_DIR a `make up` fleet uses.
RUN_DIR="${BENCH_RUN_DIR:-.run/bench}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

: "${BENCH_REPEATS:=3}"
: "${BENCH_TIMEOUT:=300}"
: "${BENCH_QUIET_WAIT:=60}"
: "${BENCH_OUT:=$RUN_DIR/out}"
: "${BENCH_PROFILE:=0}"
PORT="${BENCH_NGINX_PORT:-8190}"
REDIS_PORT="${BENCH_REDIS_PORT:-6390}"
BASE_PORT="${BENCH_BASE_PORT:-8101}"
REDIS_URL=""
# nginx on loopback only, its per-address limits out of the way: the bench measures capacity,
# and the load tester is one client address (the limits themselves are tested in tests/).
NGINX_ADDRESS=127.0.0.1
NGINX_LIMIT_CONN=65000
NGINX_LIMIT_RATE=100000
NGINX_LIMIT_BURST=65000
# Every bench instance: no per-socket rate limit (a closed loop sends as fast as replies come),
# a heartbeat every 5 s (so runs include the fan-out), quiet logs.
export RATE_LIMIT=0 HEARTBEAT_INTERVAL=5s LOG_FORMAT=json RUST_LOG=warn
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"
# shellcheck source-path=SCRIPTDIR source=lib-bench.sh
source "$ROOT_DIR/scripts/lib-bench.sh"
# shellcheck source-path=SCRIPTDIR source=lib-bench-redis.sh
source "$ROOT_DIR/scripts/lib-bench-redis.sh"
# shellcheck source-path=SCRIPTDIR source=lib-bench-capacity.sh
source "$ROOT_DIR/scripts/lib-bench-capacity.sh"
# shellcheck source-path=SCRIPTDIR source=lib-bench-faults.sh
source "$ROOT_DIR/scripts/lib-bench-faults.sh"
# shellcheck source-path=SCRIPTDIR source=lib-bench-rooms.sh
source "$ROOT_DIR/scripts/lib-bench-rooms.sh"

CEILING_BIN="$(dirname "$LOADTEST_BIN")/wsfleet-ceiling"
RESULTS_DIR="$ROOT_DIR/docs/benchmarks"
ALL_SECTIONS=(closed-loop redis startup sigterm nginx-closed nginx-open hold fan-out promote faults rooms rooms-promote)

# --- 1. closed loop, one instance, against the ceiling ---------------------------------------

section_closed_loop() {
    local n=1000 m=200 i rates_w=() rates_c=() ratios=() redis_us=() server_us=() ceil_us=() violations=0
    local client_w=() client_c=() wcmd ccmd
    section_begin closed-loop "Closed loop, $n sockets × $m messages, one instance, direct"
    bench_instances blue 1
    bench_add_instances ceiling 1
    local wurl curl_
    wurl="ws://127.0.0.1:$(instance_port blue-1)/ws/chat/"
    curl_="ws://127.0.0.1:$(instance_port ceiling-1)/ws/chat/"
    wait_for_quiet
    md "wsfleet (\`blue-1\`) and the ceiling (\`ceiling-1\`, no Redis) both run the whole time; the" \
        "runs alternate, wsfleet first. Ratio = wsfleet msg/s ÷ the ceiling's msg/s of the same pair." ""
    md "| pair | wsfleet msg/s | ceiling msg/s | ratio | wsfleet p50 / p99 ms | ceiling p50 / p99 ms | violations (w / c) | cpu w: client / server / redis / other | cpu c: client / server / other |" \
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    # At least 5 pairs here: a run lasts 1-2 s, so one scheduling hiccup moves its ratio.
    local pairs=$((BENCH_REPEATS > 5 ? BENCH_REPEATS : 5))
    for ((i = 1; i <= pairs; i++)); do
        loadtest "closed-loop-wsfleet-$i" closed-loop --connections $n --messages $m --url "$wurl" \
            --sample-pid "server=$(instance_pid blue-1)" --sample-pid "redis=$(redis_pid)"
        wcmd=$LT_CMD
        loadtest "closed-loop-ceiling-$i" closed-loop --connections $n --messages $m --url "$curl_" \
            --sample-pid "server=$(instance_pid ceiling-1)"
        ccmd=$LT_CMD
        local w="closed-loop-wsfleet-$i" c="closed-loop-ceiling-$i" rw rc ratio
        rw="$(j "$w" .messages.per_second --floor)"
        rc="$(j "$c" .messages.per_second --floor)"
        ratio="$(calc '%.2f' 'a / b' "$rw" "$rc")"
        rates_w+=("$rw") rates_c+=("$rc") ratios+=("$ratio")
        # A missing report counts as a violation: nothing was verified.
        local v
        v="$(j "$w" .count_violations)"
        [[ "$v" =~ ^[0-9]+$ ]] || v=1
        violations=$((violations + v))
        redis_us+=("$(us_per "$w" redis)")
        server_us+=("$(us_per "$w" server)")
        ceil_us+=("$(us_per "$c" server)")
        client_w+=("$(us_per "$w" loadtest)")
        client_c+=("$(us_per "$c" loadtest)")
        md "| $i | $rw | $rc | $ratio | $(j "$w" .latency_ms.p50) / $(j "$w" .latency_ms.p99) | $(j "$c" .latency_ms.p50) / $(j "$c" .latency_ms.p99) | $(j "$w" .count_violations) / $(j "$c" .count_violations) | $(cpu "$w" loadtest) / $(cpu "$w" server) / $(cpu "$w" redis) / $(cpu "$w" other) | $(cpu "$c" loadtest) / $(cpu "$c" server) / $(cpu "$c" other) |"
    done
    local mw mc mr
    mw="$(median "${rates_w[@]}")" mc="$(median "${rates_c[@]}")" mr="$(median "${ratios[@]}")"
    md "| **median** | **$mw** | **$mc** | **$mr** | | | | | |" ""
    md "The ratio is the median of the pairs' ratios (each pair ran under the same outside load)." ""
    md "Targets: wsfleet ≥ 60% of the ceiling's msg/s: ratio $mr, $(verdict "$mr" '>=' 0.6); 0 count" \
        "violations: $violations in all wsfleet runs, $(verdict "$violations" '==' 0)." ""
    if [ "$BENCH_PROFILE" = 1 ]; then
        # An extra run, outside the medians: perf itself costs CPU on the same two cores.
        profile_start "$(instance_pid blue-1)" closed-loop-profiled
        loadtest closed-loop-profiled closed-loop --connections $n --messages $m --url "$wurl"
        profile_stop closed-loop-profiled
        profile_md closed-loop-profiled
    fi
    local sw rw_ sc cw cc
    sw="$(median "${server_us[@]}")" rw_="$(median "${redis_us[@]}")" sc="$(median "${ceil_us[@]}")"
    cw="$(median "${client_w[@]}")" cc="$(median "${client_c[@]}")"
    md "CPU per message (median, µs of one core): wsfleet server **$sw**, its Redis **$rw_**, load tester" \
        "$cw; ceiling server **$sc**, load tester $cc. These hardly depend on what else runs on the" \
        "machine, unlike msg/s. If the run were CPU-bound on cores of its own, the ratio would be about" \
        "(client + ceiling) ÷ (client + server + Redis) per message = **$(calc '%.2f' '(a + b) / (a + c)' "$cc" "$sc" "$(calc '%.1f' 'a + b' "$sw" "$rw_")")**" \
        "(an estimate from the measured costs; kernel time outside the processes is left out)." ""
    md "Commands (wsfleet, then ceiling; pids and ports vary):" ""
    md_cmd "$wcmd"
    md_cmd "$ccmd"
    printf '%s\n' "$(median "${redis_us[@]}")" >"$BENCH_OUT/redis-us-per-message"
    section_end
}

# --- 3. start-up to ready --------------------------------------------------------------------

# readyz_code PORT: the HTTP status of /readyz, read with bash's /dev/tcp (no fork of curl, so
# polling every few milliseconds costs the measured process nothing).
readyz_code() {
    local line
    {
        exec 3<>"/dev/tcp/127.0.0.1/$1" &&
            printf 'GET /readyz HTTP/1.0\r\nHost: bench\r\n\r\n' >&3 &&
            read -r -t 1 line <&3 &&
            exec 3<&- && printf '%s' "${line:9:3}"
    } 2>/dev/null || printf '000'
}

section_startup() {
    local runs=5 i port start ready times=() serving=()
    section_begin startup "Start-up to ready"
    bench_stop_instances
    wait_for_quiet
    md "Time from exec of a fresh \`wsfleet\` (Redis already up, build already on disk) to its first" \
        "\`/readyz\` 200, polled every 5 ms over a raw TCP socket (no curl fork). \`/readyz\` needs a" \
        "pub/sub probe to come back through Redis. \"serving\" is the server's own" \
        "\`wsfleet_startup_duration_seconds\` (from \`Application::build\` to listening: both Redis clients connected, the port bound)." ""
    md "| run | exec → /readyz 200 (ms) | serving (ms) |" "| --- | --- | --- |"
    for ((i = 1; i <= runs; i++)); do
        port="$(free_instance_port)"
        start="$(now_us)"
        BIND_ADDR="127.0.0.1:$port" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" INSTANCE_ID="startup-$i" \
            spawn "$BENCH_OUT/startup.log" "$BENCH_OUT/startup.pid" "$(instance_bin blue)"
        local deadline=$((SECONDS + 30))
        while [ "$(readyz_code "$port")" != 200 ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.005; done
        ready="$(now_us)"
        local ms srv
        ms="$(calc '%.0f' '(b - a) / 1000' "$start" "$ready")"
        srv="$(curl -fsS -m 2 "http://127.0.0.1:$port/metrics" | awk '/^wsfleet_startup_duration_seconds / { printf "%.0f", $2 * 1000 }')"
        times+=("$ms") serving+=("$srv")
        md "| $i | $ms | ${srv:-?} |"
        say "    run $i: ready after $ms ms (serving after ${srv:-?} ms)"
        stop_pid "$BENCH_OUT/startup.pid" "$(instance_bin blue)" 15 "startup instance" >/dev/null
    done
    local med
    med="$(median "${times[@]}")"
    md "| **median** | **$med** | **$(median "${serving[@]}")** |" ""
    md "Target: < 300 ms: $(verdict "$med" '<' 300)." ""
    section_end
}

# --- 4. SIGTERM to exit with 5000 sockets ----------------------------------------------------

section_sigterm() {
    local n=5000 runs=3 i times=()
    section_begin sigterm "SIGTERM to exit with $n sockets open"
    md "One instance holds $n idle sockets (\`wsfleet-loadtest hold\`, one process); the bench sends" \
        "SIGTERM once \`/status\` counts all of them and times until the process has exited (\`wait\`" \
        "on its pid). Default \`DRAIN_SPREAD\` (2 s) and \`SHUTDOWN_TIMEOUT\` (10 s)." ""
    md "| run | sockets open | SIGTERM → exit (ms) | exit code | client saw (error kinds) |" "| --- | --- | --- | --- | --- |"
    wait_for_quiet
    for ((i = 1; i <= runs; i++)); do
        bench_instances blue 1
        local port pid lt
        port="$(instance_port blue-1)"
        pid="$(instance_pid blue-1)"
        "$LOADTEST_BIN" hold --connections $n --duration 120s --timeout 180s \
            --url "ws://127.0.0.1:$port/ws/chat/" --json "$BENCH_OUT/sigterm-$i.json" \
            >"$BENCH_OUT/sigterm-$i.txt" 2>&1 </dev/null &
        lt=$!
        LOADTEST_PIDS+=("$lt")
        # shellcheck disable=SC2317 # called by wait_until
        all_open() { [ "$(local_connections blue-1)" -ge "$n" ]; }
        wait_until 120 "$n sockets on blue-1" all_open || say "    warning: not all $n sockets opened"
        local open start end rc=0
        open="$(local_connections blue-1)"
        start="$(now_us)"
        kill -TERM "$pid"
        wait "$pid" || rc=$?
        end="$(now_us)"
        local ms
        ms="$(calc '%.0f' '(b - a) / 1000' "$start" "$end")"
        times+=("$ms")
        timeout 60 tail --pid="$lt" -f /dev/null || kill -TERM "$lt" 2>/dev/null || true
        wait "$lt" 2>/dev/null || true
        md "| $i | $open | $ms | $rc | $(j "sigterm-$i" .error_kinds) |"
        say "    run $i: $open sockets, exit after $ms ms (exit code $rc)"
        stop_instances blue-1 >/dev/null 2>&1
    done
    local med
    med="$(median "${times[@]}")"
    md "| **median** | | **$med** | | |" ""
    md "Target: < 3 s: $(verdict "$med" '<' 3000)." ""
    section_end
}

# --- 5. closed loop through nginx, 2 instances, against 2 ceilings behind the same nginx ------

section_nginx_closed() {
    local n=5000 m=20 i rates_w=() rates_c=() ratios=() ok_w=() wcmd
    section_begin nginx-closed "Closed loop through nginx, $n sockets × $m messages, 2 instances"
    bench_instances blue 2
    bench_add_instances ceiling 2
    md "\"The same workload\" for the ceiling: the same load-tester command through the same nginx" \
        "(same configuration, same worker count), whose upstream is switched (graceful reload) between" \
        "two wsfleet instances and two ceiling processes. The ratio then prices Redis and wsfleet's" \
        "own work, with nginx's cost on both sides. nginx's per-address limits are raised for the" \
        "bench (one client address)." ""
    md "| pair | wsfleet msg/s | ceiling msg/s | ratio | wsfleet ok / attempted | ceiling ok | wsfleet p99 ms | ceiling p99 ms | cpu w: client / nginx / servers / redis / other | cpu c: client / nginx / servers / other |" \
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    wait_for_quiet
    local url
    url="$(NGINX_URL)"
    for ((i = 1; i <= BENCH_REPEATS; i++)); do
        # shellcheck disable=SC2046 # one word per line from url_args/sample_args
        bench_nginx $(names blue)
        mapfile -t samples < <(sample_args blue && nginx_sample_args)
        loadtest "nginx-closed-wsfleet-$i" closed-loop --connections $n --messages $m --url "$url" "${samples[@]}"
        wcmd=$LT_CMD
        # shellcheck disable=SC2046
        bench_nginx $(names ceiling)
        # The ceilings' pids (not Redis's, which has nothing to do here), and nginx's workers.
        mapfile -t samples < <(
            sample_args ceiling | head -n 4 || true
            nginx_sample_args
        )
        loadtest "nginx-closed-ceiling-$i" closed-loop --connections $n --messages $m --url "$url" "${samples[@]}"
        local w="nginx-closed-wsfleet-$i" c="nginx-closed-ceiling-$i" rw rc ratio
        rw="$(j "$w" .messages.per_second --floor)"
        rc="$(j "$c" .messages.per_second --floor)"
        ratio="$(calc '%.2f' 'a / b' "$rw" "$rc")"
        rates_w+=("$rw") rates_c+=("$rc") ratios+=("$ratio")
        ok_w+=("$(j "$w" .connections.ok)")
        md "| $i | $rw | $rc | $ratio | $(j "$w" .connections.ok) / $(j "$w" .connections.attempted), $(j "$w" .messages.received) replies, $(j "$w" .errors) errors | $(j "$c" .connections.ok) | $(j "$w" .latency_ms.p99) | $(j "$c" .latency_ms.p99) | $(cpu "$w" loadtest) / $(cpu_sum "$w" nginx-) / $(cpu_sum "$w" blue-) / $(cpu "$w" redis) / $(cpu "$w" other) | $(cpu "$c" loadtest) / $(cpu_sum "$c" nginx-) / $(cpu_sum "$c" ceiling-) / $(cpu "$c" other) |"
    done
    local mr
    mr="$(median "${ratios[@]}")"
    md "| **median** | **$(median "${rates_w[@]}")** | **$(median "${rates_c[@]}")** | **$mr** | | | | | | |" ""
    local lw="nginx-closed-wsfleet-$BENCH_REPEATS" lc="nginx-closed-ceiling-$BENCH_REPEATS"
    md "CPU per message (µs of one core, last pair): wsfleet: servers $(us_per "$lw" blue-)," \
        "Redis $(us_per "$lw" redis), nginx $(us_per "$lw" nginx-);" \
        "ceiling: servers $(us_per "$lc" ceiling-), nginx $(us_per "$lc" nginx-)." ""
    md "Target: 100% success and ≥ 50% of the ceiling's msg/s: ratio $mr, $(verdict "$mr" '>=' 0.5);" \
        "success: every wsfleet run opened $(median "${ok_w[@]}") of $n (median) — see the ok column." ""
    md "Commands (wsfleet, then ceiling):" ""
    md_cmd "$wcmd"
    md_cmd
    section_end
}

# --- 6. open loop through nginx --------------------------------------------------------------

section_nginx_open() {
    local n=5000 rate=2 duration=30s
    section_begin nginx-open "Open loop through nginx, $n sockets × $rate msg/s for $duration, 2 instances"
    bench_instances blue 2
    # shellcheck disable=SC2046
    bench_nginx $(names blue)
    wait_for_quiet
    mapfile -t samples < <(sample_args blue && nginx_sample_args)
    loadtest nginx-open open-loop --connections $n --rate $rate --duration $duration --url "$(NGINX_URL)" "${samples[@]}" \
        --plot "$BENCH_OUT/nginx-open.svg"
    # The plot goes with the record: where in time the tail latencies are.
    [ ! -f "$BENCH_OUT/nginx-open.svg" ] || cp "$BENCH_OUT/nginx-open.svg" "$RESULTS_DIR/nginx-open.svg"
    local r=nginx-open p99
    p99="$(j $r .latency_ms.p99)"
    md "| offered / achieved msg/s | p50 / p95 / p99 / max (ms) | errors | violations | heartbeats per socket (min / max) | cpu: client / servers / redis / nginx / other / machine |" \
        "| --- | --- | --- | --- | --- | --- |"
    md "| $((n * rate)) / $(j $r .messages.per_second --floor) | $(j $r .latency_ms.p50) / $(j $r .latency_ms.p95) / **$p99** / $(j $r .latency_ms.max) | $(j $r .errors) | $(j $r .count_violations) | $(j $r .heartbeats_per_socket.min) / $(j $r .heartbeats_per_socket.max) | $(cpu $r loadtest) / $(cpu_sum $r blue-) / $(cpu $r redis) / $(cpu_sum $r nginx-) / $(cpu $r other) / $(cpu $r machine) |" ""
    md "Target: p99 < 10 ms: $(verdict "$p99" '<' 10). Plot: [nginx-open.svg](nginx-open.svg)." ""
    md_cmd
    section_end
}

# --- main ------------------------------------------------------------------------------------

sections=("$@")
if [ "${#sections[@]}" -eq 0 ] || [ "${sections[0]}" = all ]; then sections=("${ALL_SECTIONS[@]}"); fi
for s in "${sections[@]}"; do
    [[ " ${ALL_SECTIONS[*]} " == *" $s "* ]] || die "unknown section ${s@Q}: one of ${ALL_SECTIONS[*]} (or all)"
done

need_tool redis-server redis-server
need_tool redis-cli redis-tools
need_tool nginx nginx
need_tool curl curl
need_tool jq jq
build_release wsfleet wsfleet-loadtest wsfleet-ceiling
[ -x "$CEILING_BIN" ] || die "$CEILING_BIN is missing: cargo build --release -p wsfleet-ceiling"

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_prepare
say "machine: $(machine_line); source $(source_id)"
for s in "${sections[@]}"; do
    # The file name keeps the sections in the documented order in results.md.
    for i in "${!ALL_SECTIONS[@]}"; do [ "${ALL_SECTIONS[$i]}" = "$s" ] && SECTION_ORDER="$(printf '%02d' $((i + 1)))"; done
    "section_${s//-/_}"
    assemble_results
done
step "done: $(rel "$RESULTS_DIR/results.md") (reports and logs in $(rel "$BENCH_OUT"))"
