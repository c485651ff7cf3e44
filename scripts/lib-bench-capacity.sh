# shellcheck shell=bash
# The capacity and disruption sections of scripts/bench.sh: 100,000 idle sockets across six
# instances, a broadcast to 50,000, a promotion during a closed-loop run. They need the load
# tester to spread itself over several processes (--workers, repeatable --url), the fan-out
# scenario and --during; each checks for what it needs and records "not run" with the reason
# instead of a number when the built load tester lacks it. Sourced by bench.sh, never run.

# Connecting tens of thousands of sockets at once on a shared two-core machine: fewer attempts in
# flight per load-tester process (each of ~6 workers has its own 50), and a longer deadline for
# each, so that a slow accept under outside load is not recorded as a failed socket. (A first
# run with the defaults, 200 in flight per worker and 10 s, lost 0.6% of 100,000 to connect
# timeouts and to 503s: the servers' Redis calls timed out while the machine was saturated.)
CAPACITY_CONNECT_ARGS=(--concurrency 50 --connect-timeout 30s)

# --- 7. hold 100,000 idle sockets across 6 instances, direct -----------------------------------

section_hold() {
    local n=100000 k=6 hold=30s heartbeat_s=5 title
    title="Hold $n idle sockets across $k instances, direct (no nginx)"
    if ! lt_has hold --workers; then
        section_skip hold "$title" "the load tester lacks \`--workers\` (and repeatable \`--url\`): one process holds at most ~19,990 sockets."
        return
    fi
    section_begin hold "$title"
    bench_instances blue $k
    local name before=0 peak=0 rss lt
    for name in $(names blue); do before=$((before + $(rss_kib "$(instance_pid "$name")"))); done
    wait_for_quiet
    mapfile -t urls < <(url_args blue)
    mapfile -t samples < <(sample_args blue)
    LT_CMD="$(rel "$LOADTEST_BIN") hold --connections $n --duration $hold --workers auto ${CAPACITY_CONNECT_ARGS[*]} ${urls[*]} …"
    "$LOADTEST_BIN" hold --connections $n --duration $hold --workers auto "${CAPACITY_CONNECT_ARGS[@]}" "${urls[@]}" "${samples[@]}" \
        --timeout "${BENCH_TIMEOUT}s" --json "$BENCH_OUT/hold.json" >"$BENCH_OUT/hold.txt" 2>&1 </dev/null &
    lt=$!
    LOADTEST_PIDS+=("$lt")
    # Peak resident memory of all instances together while the run lasts (heartbeats every 5 s
    # reach every socket meanwhile, so their write paths count too).
    while ! gone "$lt"; do
        rss=0
        for name in $(names blue); do rss=$((rss + $(rss_kib "$(instance_pid "$name")"))); done
        [ "$rss" -gt "$peak" ] && peak=$rss
        sleep 0.5
    done
    wait "$lt" || true
    local r=hold per_socket
    per_socket="$(calc '%.1f' '(a - b) / c' "$peak" "$before" "$(j $r .connections.ok)")"
    md "| sockets ok / attempted | open at end | server RSS before → peak (KiB, $k instances) | per socket | heartbeats per socket min / avg / max | workers | errors |" \
        "| --- | --- | --- | --- | --- | --- | --- |"
    md "| $(j $r .connections.ok) / $(j $r .connections.attempted) | $(j $r .connections.open_at_end) | $before → $peak | **$per_socket KiB** | $(j $r .heartbeats_per_socket.min) / $(j $r .heartbeats_per_socket.avg) / $(j $r .heartbeats_per_socket.max) | $(j $r .workers) | $(j $r .errors) |" ""
    # Each socket counts heartbeats over its own ${hold} window (the workers' windows do not start
    # at the same instant, and frames queued before a socket's window may be read inside it), so
    # the maximum can exceed ${hold} ÷ interval; a missed heartbeat shows as a minimum below it.
    local expected=$((${hold%s} / heartbeat_s))
    md "Targets: ≤ 12 KiB server memory per socket: $(verdict "$per_socket" '<=' 12); every heartbeat to all:" \
        "every socket saw at least $expected (${hold} ÷ ${heartbeat_s} s; min $(j $r .heartbeats_per_socket.min)):" \
        "$(verdict "$(j $r .heartbeats_per_socket.min)" '>=' "$expected"); every socket held:" \
        "$(verdict "$(j $r .connections.open_at_end)" '>=' "$n")." ""
    md_cmd
    section_end
}

# --- 8. fan-out: one broadcast to 50,000 sockets ----------------------------------------------

section_fan_out() {
    local n=50000 k=6 title
    title="Fan-out: a broadcast to $n sockets across $k instances, direct"
    if ! lt_has fan-out; then
        section_skip fan-out "$title" "the load tester lacks the \`fan-out\` scenario."
        return
    fi
    section_begin fan-out "$title"
    # The target is about one broadcast: 3 of them, 10 s apart, so that one has reached every
    # socket before the next is published (a first run at 2 s apart queued them: 50,000
    # deliveries took longer than 2 s here, and the latencies added up to 5 s).
    bench_instances blue $k
    wait_for_quiet
    mapfile -t urls < <(url_args blue)
    mapfile -t samples < <(sample_args blue)
    # BENCH_PROFILE=1: one instance's sixth of the deliveries under perf (the others are alike).
    profile_start "$(instance_pid blue-1)" fan-out-profiled
    BROADCAST_TOKEN="$(<"$TOKEN_FILE")" loadtest fan-out fan-out --connections $n "${CAPACITY_CONNECT_ARGS[@]}" \
        "${urls[@]}" "${samples[@]}" --plot "$BENCH_OUT/fan-out.svg" \
        --broadcast-url "http://127.0.0.1:$(instance_port blue-1)/broadcast" --broadcasts 3 --broadcast-interval 10s
    profile_stop fan-out-profiled
    # The plot goes with the record (the JSON and table stay in $BENCH_OUT).
    [ ! -f "$BENCH_OUT/fan-out.svg" ] || cp "$BENCH_OUT/fan-out.svg" "$RESULTS_DIR/fan-out.svg"
    local r=fan-out p99
    p99="$(j $r .latency_ms.p99)"
    md "| sockets ok | broadcasts | deliveries / expected | delivery p50 / p99 / max (ms) | errors | cpu: servers / redis / client (all workers) / other |" \
        "| --- | --- | --- | --- | --- | --- |"
    md "| $(j $r .connections.ok) | $(j $r .fan_out.broadcasts) | $(j $r .fan_out.deliveries) / $(j $r .fan_out.expected_deliveries) | $(j $r .latency_ms.p50) / **$p99** / $(j $r .latency_ms.max) | $(j $r .errors) | $(cpu_sum $r blue-) / $(cpu $r redis) / $(cpu_sum $r loadtest) / $(cpu $r other) |" ""
    md "Target: delivered to all with p99 < 500 ms: all $(verdict "$(j $r .fan_out.deliveries)" '>=' "$(j $r .fan_out.expected_deliveries)")," \
        "p99 $(verdict "$p99" '<' 500). Plot: [fan-out.svg](fan-out.svg)." ""
    md_cmd "${LT_CMD%% --token *}"
    profile_md fan-out-profiled
    section_end
}

# --- 9. promote during a closed-loop run -------------------------------------------------------

section_promote() {
    local n=5000 m=60 title
    title="Promote (blue → green) during a $n-socket closed-loop run through nginx"
    if ! lt_has closed-loop --during; then
        section_skip promote "$title" "the load tester lacks \`--during\` (sockets resuming after a drain)."
        return
    fi
    section_begin promote "$title"
    bench_instances blue 2
    # shellcheck disable=SC2046
    bench_nginx $(names blue)
    echo blue >"$RUN_DIR/color"
    echo 2 >"$RUN_DIR/scale"
    wait_for_quiet
    # scripts/promote.sh on the bench's fleet: same run directory and ports, no rebuild.
    local promote="RUN_DIR=$RUN_DIR PORT=$PORT REDIS_PORT=$REDIS_PORT BASE_PORT=$BASE_PORT NGINX_ADDRESS=$NGINX_ADDRESS NGINX_LIMIT_CONN=$NGINX_LIMIT_CONN NGINX_LIMIT_RATE=$NGINX_LIMIT_RATE NGINX_LIMIT_BURST=$NGINX_LIMIT_BURST SKIP_BUILD=1 WSFLEET_BIN=$WSFLEET_BIN LOADTEST_BIN=$LOADTEST_BIN bash $ROOT_DIR/scripts/promote.sh"
    loadtest promote closed-loop --connections $n --messages $m --url "$(NGINX_URL)" \
        --during "$promote >$BENCH_OUT/promote-script.log 2>&1" --during-after 3s
    local r=promote
    md "| sockets ok | replies / sent | violations | counts lost / repeated | reconnects | longest gap (ms) | promote exit / seconds | errors |" \
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    md "| $(j $r .connections.ok) | $(j $r .messages.received) / $(j $r .messages.sent) | $(j $r .count_violations) | $(j $r .disruption.counts_lost) / $(j $r .disruption.counts_repeated) | $(j $r .disruption.reconnects) | $(j $r .disruption.longest_gap_ms) | $(j $r .disruption.exit_code) / $(j $r .disruption.command_seconds) | $(j $r .errors) |" ""
    md "Target: 0 counts lost or repeated, every client resumed: lost $(verdict "$(j $r .disruption.counts_lost)" '==' 0)," \
        "repeated $(verdict "$(j $r .disruption.counts_repeated)" '==' 0), every socket resumed (reconnects ≥ $n and" \
        "all $n open to the end with 0 errors): $(verdict "$(j $r .disruption.reconnects)" '>=' "$n"), errors $(verdict "$(j $r .errors)" '==' 0)." \
        "The servers' CPU is not sampled here: the green instances start during the run." ""
    md_cmd "${LT_CMD//"$ROOT_DIR"\//}"
    rm -f "$RUN_DIR/color" "$RUN_DIR/scale"
    section_end
}
