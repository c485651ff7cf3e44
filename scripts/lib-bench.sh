# shellcheck shell=bash
# Helpers of scripts/bench.sh: the bench's own fleet, running the load tester, small statistics
# and the Markdown the sections write. Sourced (after lib.sh and lib-fleet.sh), never run.
#
# The bench's fleet is an ordinary lib-fleet.sh fleet in its own RUN_DIR (.run/bench) on its own
# ports, so it never touches a `make up` fleet: instances `blue-<n>` (and `green-<n>` after a
# promotion) run the build; `ceiling-<n>` run wsfleet-ceiling through the same machinery (it
# reads BIND_ADDR like wsfleet and ignores the rest).

# --- processes ------------------------------------------------------------------------------

# Background load testers of ours (pids), stopped by bench_cleanup.
LOADTEST_PIDS=()

bench_redis_up() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

# bench_start_redis: our own redis-server, no persistence (every key here is throw-away).
bench_start_redis() {
    if redis_alive; then
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
        return 0
    fi
    port_open "$REDIS_PORT" && die "127.0.0.1:$REDIS_PORT is taken by something the bench did not start: set BENCH_REDIS_PORT"
    step "redis-server on 127.0.0.1:$REDIS_PORT (--save '' --appendonly no)"
    echo "$REDIS_PORT" >"$RUN_DIR/redis.port"
    spawn "$RUN_DIR/redis.log" "$RUN_DIR/redis.pid" redis-server --bind 127.0.0.1 \
        --port "$REDIS_PORT" --save '' --appendonly no --daemonize no
    wait_until 10 "redis-server to answer" bench_redis_up || die "redis-server did not start; see $(rel "$RUN_DIR/redis.log")"
    echo "redis://127.0.0.1:$REDIS_PORT" >"$RUN_DIR/redis_url"
}

redis_pid() { cat "$RUN_DIR/redis.pid"; }

# bench_prepare: binaries in place, Redis, the token; leftovers of an interrupted run stopped.
bench_prepare() {
    mkdir -p "$RUN_DIR" "$BENCH_OUT"
    chmod 700 "$RUN_DIR"
    bench_stop_fleet
    bench_start_redis
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE")
    install_binary blue
    install_binary green
    install_binary ceiling "$CEILING_BIN"
}

# bench_instances COLOUR N: exactly N fresh instances of COLOUR (blue or ceiling), all ready.
# Every other instance of ours is stopped first, so each section measures only its own.
bench_instances() {
    local color=$1 n=$2 i names=()
    bench_stop_instances
    for ((i = 1; i <= n; i++)); do
        start_instance "$color-$i" >/dev/null
        names+=("$color-$i")
    done
    if [ "$color" = ceiling ]; then
        # No HTTP routes on the ceiling: it is ready when it accepts.
        for i in "${names[@]}"; do
            wait_until 10 "$i to listen" port_open "$(instance_port "$i")" || die "$i did not start; see $(rel "$RUN_DIR/wsfleet-$i.log")"
        done
    else
        wait_ready "${names[@]}" >/dev/null || die "wsfleet did not become ready (see above)"
    fi
}

# bench_add_instances COLOUR N: N more instances of COLOUR next to the ones running.
bench_add_instances() {
    local color=$1 n=$2 i=1 names=()
    while [ "${#names[@]}" -lt "$n" ]; do
        if ! instance_alive "$color-$i"; then
            start_instance "$color-$i" >/dev/null
            names+=("$color-$i")
        fi
        i=$((i + 1))
    done
    if [ "$color" = ceiling ]; then
        for i in "${names[@]}"; do wait_until 10 "$i to listen" port_open "$(instance_port "$i")"; done
    else
        wait_ready "${names[@]}" >/dev/null || die "wsfleet did not become ready"
    fi
}

bench_stop_instances() {
    local color names=()
    for color in blue green ceiling; do
        mapfile -t -O "${#names[@]}" names < <(instances "$color")
    done
    [ "${#names[@]}" -eq 0 ] || stop_instances "${names[@]}" >/dev/null
}

# bench_nginx NAME...: our nginx in front of these instances (started or reloaded).
bench_nginx() {
    write_nginx_config "$@" >/dev/null || die "nginx refused the bench configuration"
    if nginx_alive; then nginx_reload >/dev/null || die "nginx did not reload"; else nginx_start >/dev/null; fi
}

bench_stop_fleet() {
    local pid
    for pid in "${LOADTEST_PIDS[@]}"; do
        gone "$pid" || kill -TERM "$pid" 2>/dev/null || true
    done
    LOADTEST_PIDS=()
    bench_stop_instances
    nginx_stop 5 >/dev/null 2>&1 || true
}

bench_cleanup() {
    bench_stop_fleet
    stop_pid "$RUN_DIR/redis.pid" redis-server 10 redis-server >/dev/null
}

# names COLOUR: the live instances of COLOUR, space separated.
names() { instances "$1" | tr '\n' ' '; }
# urls COLOUR: a --url option per live instance of COLOUR (direct, no nginx).
url_args() {
    local name
    for name in $(names "$1"); do printf -- '--url\nws://127.0.0.1:%s/ws/chat/\n' "$(instance_port "$name")"; done
}
# sample_args COLOUR: a --sample-pid option per live instance of COLOUR, and Redis.
sample_args() {
    local name
    for name in $(names "$1"); do printf -- '--sample-pid\n%s=%s\n' "$name" "$(instance_pid "$name")"; done
    printf -- '--sample-pid\nredis=%s\n' "$(redis_pid)"
}
# nginx_sample_args: a --sample-pid option per worker of our nginx (nginx-1, nginx-2, …).
nginx_sample_args() {
    local pid i=0
    nginx_alive || return 0
    for pid in $(pgrep -P "$(<"$NGINX_PID")" nginx || true); do
        i=$((i + 1))
        printf -- '--sample-pid\nnginx-%s=%s\n' "$i" "$pid"
    done
}
NGINX_URL() { printf 'ws://127.0.0.1:%s/ws/chat/' "$PORT"; }

# --- what the load tester can do ------------------------------------------------------------

# lt_has SCENARIO [FLAG]: the built load tester knows SCENARIO (and FLAG in its --help).
lt_has() {
    local help
    help="$("$LOADTEST_BIN" "$1" --help 2>/dev/null)" || return 1
    [ -z "${2:-}" ] || grep -q -- "$2" <<<"$help"
}

# --- the machine ----------------------------------------------------------------------------

# machine_busy: percent of the whole machine (all cores) busy over one second.
machine_busy() {
    local a b
    a="$(head -1 /proc/stat)"
    sleep 1
    b="$(head -1 /proc/stat)"
    printf '%s\n%s\n' "$a" "$b" | awk '{
        idle[NR] = $5 + $6; total[NR] = 0
        for (i = 2; i <= 9; i++) total[NR] += $i
    } END {
        t = total[2] - total[1]
        printf "%d\n", (t > 0) ? 100 * (t - (idle[2] - idle[1])) / t : 0
    }'
}

# wait_for_quiet: client and server share the cores, so other work skews every number. Wait
# up to BENCH_QUIET_WAIT seconds for the machine to drop below 15% busy; then measure anyway
# (each report records the other load as "cpu other").
wait_for_quiet() {
    local deadline=$((SECONDS + BENCH_QUIET_WAIT)) busy
    while busy="$(machine_busy)" && [ "$busy" -gt 15 ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "note: the machine is ${busy}% busy with other work; measuring anyway"
            return 0
        fi
    done
}

# --- the load tester ------------------------------------------------------------------------

# loadtest NAME ARGS...: runs wsfleet-loadtest in the foreground, bounded by --timeout (and by
# timeout(1) as a backstop); table in $BENCH_OUT/NAME.txt, JSON in $BENCH_OUT/NAME.json. Sets
# LT_RC (0 clean, 1 wrong count, 2 failures, 3 could not start) and LT_CMD (for the record).
loadtest() {
    local name=$1
    shift
    local cmd=("$LOADTEST_BIN" "$@" --timeout "${BENCH_TIMEOUT}s" --json "$BENCH_OUT/$name.json")
    rm -f "$BENCH_OUT/$name.json"
    LT_CMD="$(printf '%s ' "${cmd[@]}" | sed "s|$ROOT_DIR/||g; s|$CARGO_TARGET_DIR/|\$CARGO_TARGET_DIR/|g")"
    say "\$ $LT_CMD"
    LT_RC=0
    timeout --kill-after=10 $((BENCH_TIMEOUT + 30)) "${cmd[@]}" >"$BENCH_OUT/$name.txt" 2>&1 </dev/null || LT_RC=$?
    grep -E 'messages/s|p99|errors|violations|cpu ' "$BENCH_OUT/$name.txt" | sed 's/^/    /' || true
    [ -f "$BENCH_OUT/$name.json" ] || say "    (no report: exit $LT_RC; see $(rel "$BENCH_OUT/$name.txt"))"
}

# --- the reports' numbers -------------------------------------------------------------------
# Computed by `wsfleet-loadtest summarize` (loadtest/src/summarize/) from the JSON reports the
# runs wrote: "?" for a missing report or value, or arithmetic that fails.

summarize() { "$LOADTEST_BIN" summarize "$@" 2>/dev/null || printf '?'; }
# j NAME PATH [--floor]: a value from report NAME by dotted path (.latency_ms.p99); --floor
# rounds it down.
j() { summarize value "$BENCH_OUT/$1.json" "${@:2}"; }
# cpu NAME WHO: percent of one core used by WHO (loadtest, other, machine, or a sampled name).
cpu() { summarize cpu "$BENCH_OUT/$1.json" "$2"; }
# us_per NAME WHO [PER]: µs of CPU that WHO used (a sampled name, or every name starting with
# WHO, e.g. blue- for all instances) per reply received (PER reply, the default) or per frame
# a fan-out run delivered (PER frame): CPU seconds ÷ count. Not percent ÷ rate: the CPU sample
# ends after the sockets' closes, the run phase before them.
us_per() { summarize us-per "$BENCH_OUT/$1.json" "$2" --per "${3:-reply}"; }
# cpu_sum NAME PREFIX: summed percent of one core of every sampled name starting with PREFIX.
cpu_sum() { summarize cpu-sum "$BENCH_OUT/$1.json" "$2"; }
# median VALUE...: the median (mean of the middle two for an even count); "?" values ignored.
median() { summarize median "$@"; }
# calc FORMAT EXPR A [B [C]]: arithmetic (+ - * / and parentheses) on a, b, c, printed with
# FORMAT (%.2f); "?" when an input is not a number or on a division by zero.
calc() { summarize calc "$@"; }
# verdict VALUE OP TARGET: "met" or "**not met**" (or "?" without a value).
verdict() { summarize verdict "$@"; }

# --- profiles -------------------------------------------------------------------------------

PERF_PID=""
# profile_start PID NAME: perf record (software cpu-clock: this VM has no hardware counters;
# DWARF call graphs: release builds carry no frame pointers) of PID until profile_stop.
profile_start() {
    PERF_PID=""
    rm -f "$BENCH_OUT/$2.perf.txt"
    [ "$BENCH_PROFILE" = 1 ] || return 0
    command -v perf >/dev/null 2>&1 || {
        say "note: BENCH_PROFILE=1 but perf is not installed (linux-perf); no profile"
        return 0
    }
    perf record -F 199 -e cpu-clock --call-graph dwarf,16384 -p "$1" -o "$BENCH_OUT/$2.perf.data" \
        >"$BENCH_OUT/$2.perf.log" 2>&1 &
    PERF_PID=$!
}
# profile_stop NAME: ends the recording and writes NAME.perf.txt (shares by library, and the
# frames that hold most of the time, inclusive).
profile_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    local data="$BENCH_OUT/$1.perf.data" out="$BENCH_OUT/$1.perf.txt"
    {
        perf report -i "$data" --stdio --no-children --sort dso -g none 2>/dev/null | grep -E '^ +[0-9]' || true
        echo
        # Inclusive; the unresolved root frame (0xffff…) that holds everything is left out.
        perf report -i "$data" --stdio --children --sort sym -g none 2>/dev/null |
            grep -E '^ +[0-9]' | grep -v '0xffffffffffffffff' | head -n 40 || true
    } >"$out"
}
# profile_md NAME: a summary of NAME.perf.txt in the section, when this run made one.
profile_md() {
    local out="$BENCH_OUT/$1.perf.txt"
    [ -s "$out" ] || return 0
    md "Profile of the server during this run (\`perf record -e cpu-clock --call-graph dwarf\`, share of" \
        "its samples; full report $(rel "$out")). By library:" "" '```'
    { grep -E '^ +[0-9.]+% +[^ 0-9]' "$out" || true; } | head -n 5 >>"$FRAG"
    md '```' "" "Frames holding the most time (inclusive):" "" '```'
    { grep -E '^ +[0-9.]+% +[0-9.]+% ' "$out" || true; } | head -n 25 | cut -c1-150 >>"$FRAG"
    md '```' ""
}

# --- the clock and memory -------------------------------------------------------------------

now_us() { local t=${EPOCHREALTIME/./}; printf '%s' "$t"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- the record -----------------------------------------------------------------------------

# A section writes its Markdown to $FRAG (a temporary file) and section_end moves it to
# docs/benchmarks/sections/, where `results.md` is assembled from every section's latest run.
section_begin() {
    SECTION_NAME=$1
    FRAG="$BENCH_OUT/$1.md.tmp"
    step "section $1: $2"
    {
        printf '## %s\n\n' "$2"
        printf '_Run %s UTC, source %s, machine %s._\n\n' "$(date -u '+%Y-%m-%d %H:%M')" "$(source_id)" "$(machine_line)"
    } >"$FRAG"
}
md() { printf '%s\n' "$@" >>"$FRAG"; }
# md_cmd: the last load-tester command, as a code block.
# shellcheck disable=SC2016 # literal backticks
md_cmd() { printf '```\n%s\n```\n\n' "${1:-$LT_CMD}" >>"$FRAG"; }
section_end() {
    mkdir -p "$RESULTS_DIR/sections"
    mv -f "$FRAG" "$RESULTS_DIR/sections/$SECTION_ORDER-$SECTION_NAME.md"
}
# section_skip NAME TITLE WHY: records that the section could not run, and why.
section_skip() {
    section_begin "$1" "$2"
    md "**Not run:** $3" ""
    section_end
    say "    not run: $3"
}

source_id() {
    local id dirty=""
    id="$(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    git -C "$ROOT_DIR" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && dirty=" + uncommitted changes in src/"
    # shellcheck disable=SC2016 # literal backticks
    printf '`%s`%s' "$id" "$dirty"
}
machine_line() {
    printf '%s cores (%s), %s GiB, load average %s' "$(nproc)" \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1 | tr -s ' ')" \
        "$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# assemble_results: docs/benchmarks/results.md from the header and every section's file.
assemble_results() {
    local out="$RESULTS_DIR/results.md" f
    {
        say "# Benchmark results (generated)"
        say ""
        say "Written by \`scripts/bench.sh\` (\`make bench\`); do not edit by hand: the analysis is in"
        say "[../BENCHMARKS.md](../BENCHMARKS.md). Each section below comes from the latest run of that"
        say "section (\`scripts/bench.sh SECTION\`), with its own date, source and machine load."
        say "\"cpu\" columns are percent of one core over the measured phase, sampled by the load tester"
        say "from /proc; \"other\" is machine-wide busy time no sampled process accounts for (other"
        say "work on the machine, plus kernel time for loopback traffic)."
        say ""
        for f in "$RESULTS_DIR"/sections/*.md; do
            [ -f "$f" ] || continue
            cat "$f"
            say ""
        done
    } >"$out.tmp"
    mv -f "$out.tmp" "$out"
    step "wrote $(rel "$out")"
}
