# shellcheck shell=bash
# The rooms section of scripts/bench.sh (issue 17's targets): publish → deliver latency for one
# 1000-member room over 4 instances and for 2000 rooms of 10, a 1000-member room at 100
# publications/s and the curve of p99 against the publication rate up to saturation, Redis
# commands per publication, Redis memory per membership. Every run is `wsfleet-loadtest rooms`
# straight to the instances (each room's members spread over all of them), every delivery
# verified (lost / duplicated / out of order). Sourced by bench.sh, never run.
#
#   ROOMS_SMOKE=1   tiny sizes and short runs: checks that the section runs to the end, not a
#                   measurement (the record says so).

# rooms_run NAME INSTANCES ARGS...: one rooms run to the first INSTANCES blue instances (all of
# them sampled for CPU), with Redis's INFO read (--redis-info).
rooms_run() {
    local name=$1 k=$2
    shift 2
    local urls=() samples=() i
    for ((i = 1; i <= k; i++)); do
        urls+=(--url "ws://127.0.0.1:$(instance_port "blue-$i")/ws/chat/")
        samples+=(--sample-pid "blue-$i=$(instance_pid "blue-$i")")
    done
    loadtest "$name" rooms "${urls[@]}" "${samples[@]}" --sample-pid "redis=$(redis_pid)" \
        --redis-info "127.0.0.1:$REDIS_PORT" --concurrency 100 --connect-timeout 30s "$@"
}

# rooms_verified NAME: "0 / 0 / 0" style lost / duplicated / out of order, and deliveries.
rooms_verified() {
    printf '%s / %s (lost %s, dup %s, ooo %s)' "$(j "$1" .rooms.deliveries)" "$(j "$1" .rooms.expected_deliveries)" \
        "$(j "$1" .rooms.lost)" "$(j "$1" .rooms.duplicated)" "$(j "$1" .rooms.out_of_order)"
}

# rooms_calls NAME COMMAND: calls of COMMAND while publishing (0 when it did not run at all).
rooms_calls() {
    local v
    v="$(j "$1" ".redis.commands.$2")"
    [[ "$v" =~ ^[0-9]+$ ]] || v=0
    printf '%s' "$v"
}

# rooms_breaks NAME: lost + duplicated + out of order (1 without a report: nothing verified).
rooms_breaks() {
    local v
    v="$(calc '%.0f' 'a + b + c' "$(j "$1" .rooms.lost)" "$(j "$1" .rooms.duplicated)" "$(j "$1" .rooms.out_of_order)")"
    [[ "$v" =~ ^[0-9]+$ ]] || v=1
    printf '%s' "$v"
}

# rooms_repeated TITLE KEY TARGET_MS INSTANCES ARGS...: BENCH_REPEATS runs of one workload, a
# row each and the median p99 against TARGET_MS.
rooms_repeated() {
    local title=$1 key=$2 target=$3 k=$4
    shift 4
    local i p99s=() breaks=0 r
    md "### $title" "" \
        "| run | deliveries / expected | deliveries/s | p50 / p95 / p99 / max (ms) | errors | cpu: client / servers / redis / other |" \
        "| --- | --- | --- | --- | --- | --- |"
    for ((i = 1; i <= BENCH_REPEATS; i++)); do
        r="rooms-$key-$i"
        rooms_run "$r" "$k" "$@"
        p99s+=("$(j "$r" .latency_ms.p99)")
        breaks=$((breaks + $(rooms_breaks "$r")))
        md "| $i | $(rooms_verified "$r") | $(j "$r" .rooms.deliveries_per_second --floor) | $(j "$r" .latency_ms.p50) / $(j "$r" .latency_ms.p95) / $(j "$r" .latency_ms.p99) / $(j "$r" .latency_ms.max) | $(j "$r" .errors) | $(cpu "$r" loadtest) / $(cpu_sum "$r" blue-) / $(cpu "$r" redis) / $(cpu "$r" other) |"
    done
    local med
    med="$(median "${p99s[@]}")"
    md "| **median p99** | | | **$med** | | |" ""
    md "Target: p99 < $target ms: $(verdict "$med" '<' "$target"); every delivery verified (0 lost," \
        "duplicated or out of order over all runs: $breaks): $(verdict "$breaks" '==' 0)." ""
    md_cmd
}

section_rooms() {
    local big=1000 k=4 rooms=2000 small=10 secs=30 sweep=(25 50 100 200 400 800 1600) sweep_secs=10
    local note=""
    if [ "${ROOMS_SMOKE:-0}" = 1 ]; then
        big=20 k=2 rooms=20 small=3 secs=2 sweep=(5 10) sweep_secs=2
        note="**ROOMS_SMOKE=1: tiny sizes, a check that the section runs, not a measurement.**"
    fi
    local title="Rooms: publish → deliver, $big-member room over $k instances, $rooms rooms × $small, the rate curve"
    if ! lt_has rooms --redis-info; then
        section_skip rooms "$title" "the load tester lacks the \`rooms\` scenario (or \`--redis-info\`)."
        return
    fi
    section_begin rooms "$title"
    [ -z "$note" ] || md "$note" ""
    bench_instances blue $k
    wait_for_quiet
    md "\`wsfleet-loadtest rooms\` straight to the instances: socket \`i\` joins room \`i ÷ members\` while" \
        "connecting (its \`room_users\` offset is where its expectations start) through instance" \
        "\`i mod $k\`, so every room's members are spread over every instance. Publishers are the first" \
        "members of each room, sending \`message\` commands (the chat path: one script in Redis, the" \
        "room's sharded channel, each instance with members); latency is from the send time each" \
        "publication carries to its arrival at each member, sender included. Every member checks every" \
        "offset of its room: lost, duplicated, out of order. Client, $k instances and Redis share the" \
        "machine's cores; \`RATE_LIMIT=0\` on the bench instances." ""

    # Memory per membership first, on fresh instances (no memberships of earlier runs expiring
    # meanwhile): Redis used_memory per socket with rooms (before connecting → all joined) minus
    # per socket without (hold, same sockets and instances), the hold first (its sockets have no
    # session in Redis, so nothing of it lingers).
    local hold_urls=() i with without
    for ((i = 1; i <= k; i++)); do hold_urls+=(--url "ws://127.0.0.1:$(instance_port "blue-$i")/ws/chat/"); done
    loadtest rooms-mem-hold hold --connections $big --duration 1s --redis-info "127.0.0.1:$REDIS_PORT" "${hold_urls[@]}"
    rooms_run rooms-mem-rooms $k --rooms 1 --members $big --rate 1 --duration 1s
    with="$(j rooms-mem-rooms .redis.memory_per_socket_bytes)" without="$(j rooms-mem-hold .redis.memory_per_socket_bytes)"
    md "### Redis memory per membership" "" \
        "Redis \`used_memory\` before connecting → once every socket is connected (and, with rooms," \
        "joined), ÷ sockets: $big sockets over $k instances in one room: **$with B** per socket; the" \
        "same sockets without rooms (\`hold\`): $without B. Per membership: **$(calc '%.0f' 'a - b' "$with" "$without") B**" \
        "(the room's sorted set, hashes and the session's room field; the session hash a room creates" \
        "is in it too)." ""
    md_cmd

    rooms_repeated "One $big-member room, $k instances, 10 publications/s for ${secs} s" big10 10 $k \
        --rooms 1 --members $big --rate 10 --duration "${secs}s"
    rooms_repeated "$rooms rooms × $small members, 1 publication/s each, for ${secs} s" many 50 $k \
        --rooms $rooms --members $small --rate 1 --duration "${secs}s"
    rooms_repeated "One $big-member room at 100 publications/s ($((big * 100)) deliveries/s), 10 publishers, ${secs} s" big100 250 $k \
        --rooms 1 --members $big --rate 100 --publishers 10 --duration "${secs}s"

    # The curve: one run per rate until the fleet no longer keeps up (p99 past a second, or
    # fewer deliveries than published × members).
    md "### p99 against the publication rate (one $big-member room, $k instances, 10 publishers, ${sweep_secs} s a rate)" "" \
        "| publications/s | deliveries/s offered / achieved | p50 / p99 / max (ms) | deliveries / expected | cpu: client / servers / redis |" \
        "| --- | --- | --- | --- | --- |"
    local rate r p99 got want
    for rate in "${sweep[@]}"; do
        r="rooms-sweep-$rate"
        rooms_run "$r" $k --rooms 1 --members $big --rate "$rate" --publishers 10 --duration "${sweep_secs}s"
        p99="$(j "$r" .latency_ms.p99)"
        got="$(j "$r" .rooms.deliveries)" want="$(j "$r" .rooms.expected_deliveries)"
        md "| $rate | $((rate * big)) / $(j "$r" .rooms.deliveries_per_second --floor) | $(j "$r" .latency_ms.p50) / $p99 / $(j "$r" .latency_ms.max) | $(rooms_verified "$r") | $(cpu "$r" loadtest) / $(cpu_sum "$r" blue-) / $(cpu "$r" redis) |"
        if [ "$(verdict "$p99" '<' 1000)" != met ] || [ "$got" != "$want" ]; then
            md "" "Saturated at $rate publications/s (p99 ≥ 1 s or deliveries missing): the curve stops here."
            break
        fi
    done
    md ""

    # Redis commands per publication: the same 100/s to a room of $small on one instance and to
    # the $big-member room on $k (the last big100 run), from INFO commandstats over publishing.
    rooms_run rooms-cmds-small 1 --rooms 1 --members $small --rate 100 --duration "${secs}s"
    local big_r="rooms-big100-$BENCH_REPEATS" row
    md "### Redis commands per publication" "" \
        "INFO commandstats from the run phase's start to a second after the last publication was due" \
        "(\`--redis-info\`), ÷ publications sent. A script's own commands (\`redis.call\`) count as" \
        "commands in Redis's statistics, beside the script call; the fleet's background work in the" \
        "same window (lease renewals, heartbeats, sweeps) is in the total too." "" \
        "| workload | publications | script calls (evalsha + eval) / publication | spublish / publication | all commands / publication |" \
        "| --- | --- | --- | --- | --- |"
    for row in "rooms-cmds-small:1 room × $small, 1 instance" "$big_r:1 room × $big, $k instances"; do
        r="${row%%:*}"
        local pubs
        pubs="$(j "$r" .rooms.published)"
        md "| ${row#*:} | $pubs | $(calc '%.2f' '(a + b) / c' "$(rooms_calls "$r" evalsha)" "$(rooms_calls "$r" eval)" "$pubs") | $(calc '%.2f' 'a / b' "$(rooms_calls "$r" spublish)" "$pubs") | $(j "$r" .redis.commands_per_publication) |"
    done
    md "" "Target: independent of member and instance count (compare the two rows). Command of the" \
        "first row:" ""
    md_cmd
    section_end
}

# --- rooms-promote: issue 12's record ------------------------------------------------------------
#
#   ROOMS_PROMOTE_SMOKE=1   tiny sizes: checks that the section runs to the end, not a
#                           measurement (the record says so).

section_rooms_promote() {
    local rooms=100 members=50 rate=20 secs=40 after=3s note=""
    if [ "${ROOMS_PROMOTE_SMOKE:-0}" = 1 ]; then
        rooms=4 members=5 rate=5 secs=20
        note="**ROOMS_PROMOTE_SMOKE=1: tiny sizes, a check that the section runs, not a measurement.**"
    fi
    local n=$((rooms * members)) title
    title="Rooms during a promote: $n members in $rooms rooms through nginx, $rate publications/s per room, --resume"
    if ! lt_has rooms --resume; then
        section_skip rooms-promote "$title" "the load tester lacks \`rooms --resume\` (recovery with offsets)."
        return
    fi
    section_begin rooms-promote "$title"
    [ -z "$note" ] || md "$note" ""
    bench_instances blue 2
    # shellcheck disable=SC2046
    bench_nginx $(names blue)
    echo blue >"$RUN_DIR/color"
    echo 2 >"$RUN_DIR/scale"
    wait_for_quiet
    md "\`wsfleet-loadtest rooms --resume\` through nginx while \`make promote\` (scripts/promote.sh on" \
        "the bench's fleet) replaces the blue instances with green ones: every socket of blue gets \`bye\`" \
        "and 1001, resumes its session on green, joins its room again with \`since\`/\`epoch\`, and must" \
        "then receive every publication it missed, once, in order, before the live ones. Publishers" \
        "keep publishing; one whose socket is down resends what it has not seen back, with the same" \
        "client \`id\` (published once). Every member checks every offset of its room." ""
    local promote="RUN_DIR=$RUN_DIR PORT=$PORT REDIS_PORT=$REDIS_PORT BASE_PORT=$BASE_PORT NGINX_ADDRESS=$NGINX_ADDRESS NGINX_LIMIT_CONN=$NGINX_LIMIT_CONN NGINX_LIMIT_RATE=$NGINX_LIMIT_RATE NGINX_LIMIT_BURST=$NGINX_LIMIT_BURST SKIP_BUILD=1 WSFLEET_BIN=$WSFLEET_BIN LOADTEST_BIN=$LOADTEST_BIN bash $ROOT_DIR/scripts/promote.sh"
    loadtest rooms-promote rooms --rooms $rooms --members $members --rate $rate --duration "${secs}s" \
        --resume --url "$(NGINX_URL)" --concurrency 100 --connect-timeout 30s \
        --during "$promote >$BENCH_OUT/rooms-promote-script.log 2>&1" --during-after $after
    local r=rooms-promote
    md "| members ok | deliveries / expected | lost / duplicated / out of order | not recovered | reconnects | longest gap (ms) | resent | p50 / p99 / max (ms) | promote exit / seconds | errors |" \
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    md "| $(j $r .connections.ok) | $(j $r .rooms.deliveries) / $(j $r .rooms.expected_deliveries) | $(j $r .rooms.lost) / $(j $r .rooms.duplicated) / $(j $r .rooms.out_of_order) | $(j $r .recovery.not_recovered) | $(j $r .recovery.reconnects) | $(j $r .recovery.longest_gap_ms) | $(j $r .recovery.resent) | $(j $r .latency_ms.p50) / $(j $r .latency_ms.p99) / $(j $r .latency_ms.max) | $(j $r .disruption.exit_code) / $(j $r .disruption.command_seconds) | $(j $r .errors) |" ""
    md "Target: 0 lost, 0 duplicated: lost $(verdict "$(j $r .rooms.lost)" '==' 0), duplicated" \
        "$(verdict "$(j $r .rooms.duplicated)" '==' 0), out of order $(verdict "$(j $r .rooms.out_of_order)" '==' 0)," \
        "every rejoin recovered $(verdict "$(j $r .recovery.not_recovered)" '==' 0), every member resumed" \
        "(reconnects ≥ $n): $(verdict "$(j $r .recovery.reconnects)" '>=' "$n"), errors $(verdict "$(j $r .errors)" '==' 0)." \
        "Latency includes each outage (a missed publication is timed from its send to its recovery)." ""
    md_cmd "${LT_CMD//"$ROOT_DIR"\//}"
    rm -f "$RUN_DIR/color" "$RUN_DIR/scale"
    section_end
}
