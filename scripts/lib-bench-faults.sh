# shellcheck shell=bash
# The bench's fault section (scripts/bench.sh faults): the counter's exactly-once promise under
# load while something breaks on purpose. Sourced by scripts/bench.sh, never run.

# --- 10. faults during a closed-loop run -----------------------------------------------------

# fault_command NAME: the shell command (for --during) that breaks NAME on the bench's fleet.
fault_command() {
    local redis_pid
    redis_pid="$(redis_pid)"
    case "$1" in
    # An instance dies without a drain: its sockets break, their clients resume on the other.
    sigkill-instance) printf 'kill -KILL %s' "$(instance_pid blue-1)" ;;
    # Redis dies and comes back empty (the bench's Redis keeps no data): every counter and the
    # registry are gone; open sockets continue above what they told their clients, resuming
    # clients pass last_count.
    redis-restart-empty)
        printf 'kill -KILL %s && sleep 1 && { setsid redis-server --bind 127.0.0.1 --port %s --save "" --appendonly no </dev/null >>%s 2>&1 & echo $! >%s; }' \
            "$redis_pid" "$REDIS_PORT" "$RUN_DIR/redis.log" "$RUN_DIR/redis.pid"
        ;;
    # Redis stops answering for 3 s (SIGSTOP): increments time out and are answered
    # `unavailable`; some of them run when Redis continues.
    redis-sigstop-3s) printf 'kill -STOP %s && sleep 3 && kill -CONT %s' "$redis_pid" "$redis_pid" ;;
    *) die "unknown fault $1" ;;
    esac
}

section_faults() {
    local n=2000 m=60 fault r title
    title="Faults during a $n-socket closed-loop run through nginx: nothing lost or repeated"
    if ! lt_has closed-loop --during; then
        section_skip faults "$title" "the load tester lacks \`--during\`."
        return
    fi
    section_begin faults "$title"
    md "Each run: 2 fresh instances behind nginx, $n sockets × $m counted messages, and 3 s into the" \
        "run one fault (\`--during\`). Clients follow docs/PROTOCOL.md: resume after a close with" \
        "\`last_count\`, resend what was not acknowledged, resend a frame answered \`unavailable\`." ""
    md "| fault | sockets ok | replies / sent | unavailable answers | violations | counts lost / repeated | reconnects (repaired) | longest gap (ms) | errors |" \
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    local cmds=()
    for fault in sigkill-instance redis-restart-empty redis-sigstop-3s; do
        bench_start_redis
        bench_instances blue 2
        # shellcheck disable=SC2046
        bench_nginx $(names blue)
        wait_for_quiet
        r="faults-$fault"
        loadtest "$r" closed-loop --connections $n --messages $m --url "$(NGINX_URL)" \
            --during "$(fault_command "$fault") >$BENCH_OUT/$r-during.log 2>&1" --during-after 3s
        cmds+=("$LT_CMD")
        md "| $fault | $(j "$r" .connections.ok) | $(j "$r" .messages.received) / $(j "$r" .messages.sent) | $(j "$r" .messages.unavailable) | $(j "$r" .count_violations) | $(j "$r" .disruption.counts_lost) / $(j "$r" .disruption.counts_repeated) | $(j "$r" .disruption.reconnects) ($(j "$r" .disruption.repaired)) | $(j "$r" .disruption.longest_gap_ms) | $(j "$r" .errors) |"
        # The Redis a fault restarted by hand is the bench's Redis from now on.
        redis_alive || echo "$REDIS_PORT" >"$RUN_DIR/redis.port"
    done
    md "" "Target: 0 counts lost, 0 repeated, 0 violations in every run." "" "Commands:" ""
    local cmd
    for cmd in "${cmds[@]}"; do md_cmd "${cmd//"$ROOT_DIR"\//}"; done
    section_end
}
