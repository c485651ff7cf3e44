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

# --- 8. fan-out: one broadcast to 50,000 sockets, against the fan-out ceiling --------------

# fan_out_run NAME COLOUR: one fan-out run to the sockets of every COLOUR instance. wsfleet's
# broadcasts go to one instance (Redis fans them out); the ceilings share nothing, so each one
# gets each broadcast (repeatable --broadcast-url, same stamp).
fan_out_run() {
    local name=$1 color=$2 n=50000 posts=() i
    mapfile -t urls < <(url_args "$color")
    mapfile -t samples < <(sample_args "$color")
    if [ "$color" = ceiling ]; then
        for i in $(names ceiling); do posts+=(--broadcast-url "http://127.0.0.1:$(instance_port "$i")/broadcast"); done
    else
        posts=(--broadcast-url "http://127.0.0.1:$(instance_port "$color-1")/broadcast")
    fi
    BROADCAST_TOKEN="$(<"$TOKEN_FILE")" loadtest "$name" fan-out --connections $n "${CAPACITY_CONNECT_ARGS[@]}" \
        "${urls[@]}" "${samples[@]}" --plot "$BENCH_OUT/$name.svg" "${posts[@]}" \
        --broadcasts 3 --broadcast-interval 5s
}

section_fan_out() {
    local n=50000 k=6 title i p99_w=() p99_c=() ratios=() wcmd ccmd
    title="Fan-out: a broadcast to $n sockets across $k instances, direct, against the fan-out ceiling"
    if ! lt_has fan-out; then
        section_skip fan-out "$title" "the load tester lacks the \`fan-out\` scenario."
        return
    fi
    section_begin fan-out "$title"
    # The target is about one broadcast: 3 of them, 5 s apart, so that one has reached every
    # socket before the next is published (a first run at 2 s apart queued them: 50,000
    # deliveries took longer than 2 s here, and the latencies added up to 5 s).
    # The default heartbeat interval (30 s) here, not the bench's 5 s: a beat to 50,000 sockets
    # is 50,000 deliveries of its own, spread over 1 s, and with beats every 5 s and broadcasts
    # 5 s apart a broadcast could land in that window every time or never, depending on the
    # run's phase (p99 519 to 1215 ms in three runs so). The hold section covers heartbeats.
    # shellcheck disable=SC2030,SC2031 # only the instances started here see them
    (export HEARTBEAT_INTERVAL=30s && bench_instances blue $k) || die "wsfleet did not start"
    # shellcheck disable=SC2030,SC2031
    (export CEILING_FAN_OUT=1 && bench_add_instances ceiling $k) || die "the ceilings did not start"
    wait_for_quiet
    md "wsfleet: $k instances, each broadcast posted to one of them (Redis pub/sub takes it to" \
        "all six). The ceiling: $k \`wsfleet-ceiling --fan-out\` processes (no Redis: each takes" \
        "\`POST /broadcast\` and writes the frame to its own sockets through one ring), each broadcast" \
        "posted to every one of them with the same stamp. The same load tester, sockets split" \
        "round-robin over the six; pairs alternate, wsfleet first. Latency = arrival − publish time" \
        "carried in the broadcast; every socket must get every broadcast once." ""
    md "| pair | wsfleet deliveries | wsfleet p50 / p99 / max ms | ceiling deliveries | ceiling p50 / p99 / max ms | p99 ratio (w ÷ c) | cpu µs per delivery w: servers / client | c: servers / client |" \
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for ((i = 1; i <= BENCH_REPEATS; i++)); do
        fan_out_run "fan-out-wsfleet-$i" blue
        wcmd=$LT_CMD
        # BENCH_PROFILE=1: one wsfleet instance under perf in one more run (outside the pairs).
        fan_out_run "fan-out-ceiling-$i" ceiling
        ccmd=$LT_CMD
        local w="fan-out-wsfleet-$i" c="fan-out-ceiling-$i" pw pc
        pw="$(j "$w" .latency_ms.p99)" pc="$(j "$c" .latency_ms.p99)"
        p99_w+=("$pw") p99_c+=("$pc") ratios+=("$(calc '%.2f' 'a / b' "$pw" "$pc")")
        md "| $i | $(j "$w" .fan_out.deliveries) / $(j "$w" .fan_out.expected_deliveries) | $(j "$w" .latency_ms.p50) / **$pw** / $(j "$w" .latency_ms.max) | $(j "$c" .fan_out.deliveries) / $(j "$c" .fan_out.expected_deliveries) | $(j "$c" .latency_ms.p50) / **$pc** / $(j "$c" .latency_ms.max) | ${ratios[-1]} | $(us_per "$w" blue- "$FRAMES_DELIVERED") / $(us_per "$w" loadtest "$FRAMES_DELIVERED") | $(us_per "$c" ceiling- "$FRAMES_DELIVERED") / $(us_per "$c" loadtest "$FRAMES_DELIVERED") |"
    done
    local mw mc mr
    mw="$(median "${p99_w[@]}")" mc="$(median "${p99_c[@]}")" mr="$(median "${ratios[@]}")"
    md "| **median** | | p99 **$mw** | | p99 **$mc** | **$mr** | | |" ""
    md "CPU per delivery: CPU seconds over the run (its 5 s grace and closes included) ÷ frames delivered (broadcasts, and" \
        "heartbeats for wsfleet; its pings, probes and lease renewals are in the CPU too: they are" \
        "its work). Heartbeats every 30 s (the default) in this section, not the bench's 5 s." ""
    md "Targets: every broadcast delivered to every socket: $(verdict "$(j "fan-out-wsfleet-$BENCH_REPEATS" .errors)" '==' 0)" \
        "(errors in the last wsfleet run); p99 < 500 ms: wsfleet $mw ms, $(verdict "$mw" '<' 500); the ceiling" \
        "itself: $mc ms, $(verdict "$mc" '<' 500). Plots of the last pair: [fan-out.svg](fan-out.svg)," \
        "[fan-out-ceiling.svg](fan-out-ceiling.svg)." ""
    [ ! -f "$BENCH_OUT/fan-out-wsfleet-$BENCH_REPEATS.svg" ] || cp "$BENCH_OUT/fan-out-wsfleet-$BENCH_REPEATS.svg" "$RESULTS_DIR/fan-out.svg"
    [ ! -f "$BENCH_OUT/fan-out-ceiling-$BENCH_REPEATS.svg" ] || cp "$BENCH_OUT/fan-out-ceiling-$BENCH_REPEATS.svg" "$RESULTS_DIR/fan-out-ceiling.svg"
    if [ "$BENCH_PROFILE" = 1 ]; then
        profile_start "$(instance_pid blue-1)" fan-out-profiled
        fan_out_run fan-out-profiled blue
        profile_stop fan-out-profiled
        profile_md fan-out-profiled
    fi
    md "Commands (wsfleet, then ceiling; pids and ports vary):" ""
    md_cmd "${wcmd%% --token *}"
    md_cmd "${ccmd%% --token *}"
    section_end
}

# us_per's divisor in a fan-out run: each frame delivered (its broadcasts, and the heartbeats).
FRAMES_DELIVERED=frame

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
