#!/usr/bin/env bash
# make monitor: a live view of the fleet, refreshed every MONITOR_INTERVAL seconds until Ctrl-C:
# per instance its connections and message rate (deltas of wsfleet_messages_received_total
# between two scrapes of /metrics), and the fleet's totals; with our Prometheus running (make up
# starts it when installed), also the fleet's p95 message handling time over the last minute.
#
#   MONITOR_INTERVAL=2   seconds between refreshes
#   MONITOR_COUNT=0      stop after this many refreshes (0: until Ctrl-C)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"
# shellcheck source-path=SCRIPTDIR source=lib-prometheus.sh
source "$ROOT_DIR/scripts/lib-prometheus.sh"

: "${MONITOR_INTERVAL:=2}"
: "${MONITOR_COUNT:=0}"
[[ "$MONITOR_INTERVAL" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "MONITOR_INTERVAL must be a number of seconds"
[[ "$MONITOR_COUNT" =~ ^[0-9]+$ ]] || die "MONITOR_COUNT must be a whole number"
need_tool curl curl

# metric TEXT NAME: the value of an unlabelled sample NAME in Prometheus text, or 0.
metric() {
    awk -v name="$2" '$1 == name { v = $2 } END { printf "%d", (v == "" ? 0 : v) }' <<<"$1"
}

# p95_line: the fleet's p95 handling time from Prometheus, or why there is none.
p95_line() {
    prometheus_alive || {
        printf 'p95: - (no Prometheus of ours; make up PROMETHEUS=1 starts one)'
        return 0
    }
    local query='histogram_quantile(0.95, sum by (le) (rate(wsfleet_message_handling_seconds_bucket[1m])))'
    curl -fsS -m 2 -G "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$query" 2>/dev/null |
        python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
v = float(r[0]["value"][1]) if r else float("nan")
print("p95 message handling, last minute: " + ("- (no messages)" if v != v else "%.2f ms" % (v * 1000)))' 2>/dev/null ||
        printf 'p95: - (Prometheus did not answer)'
}

declare -A last_total last_time
clear_screen=""
[ -t 1 ] && clear_screen=$'\033[H\033[2J'
round=0
trap 'echo; exit 0' INT TERM

while true; do
    round=$((round + 1))
    LIVE="$(live_color)"
    mapfile -t names < <(instances "$LIVE"; instances "$(other_color "$LIVE")")
    mapfile -t upstream < <(upstream_names)
    out="$(printf 'wsfleet monitor  %s  (every %ss, Ctrl-C to stop)' "$(date '+%H:%M:%S')" "$MONITOR_INTERVAL")"
    out+=$'\n\n'"$(printf '%-6s %-18s %-6s %-6s %8s %10s %s' COLOUR INSTANCE PORT READY CONNS 'MSG/S' NGINX)"
    sum_conns=0 sum_rate=0 fleet="?"
    now="$(date +%s.%N)"
    for name in "${names[@]}"; do
        port="$(instance_port "$name")"
        text="$(curl -fsS -m 2 "http://127.0.0.1:$port/metrics" 2>/dev/null || true)"
        ready=no
        curl -fsS -o /dev/null -m 1 "http://127.0.0.1:$port/readyz" 2>/dev/null && ready=yes
        conns="$(metric "$text" wsfleet_connections_active)"
        total="$(metric "$text" wsfleet_messages_received_total)"
        [ "$fleet" != "?" ] || [ -z "$text" ] || fleet="$(metric "$text" wsfleet_fleet_connections)"
        rate="-"
        if [ -n "${last_total[$name]:-}" ]; then
            rate="$(awk -v a="${last_total[$name]}" -v b="$total" -v s="${last_time[$name]}" -v e="$now" \
                'BEGIN { d = e - s; printf "%.0f", (d > 0 && b >= a) ? (b - a) / d : 0 }')"
            sum_rate=$((sum_rate + rate))
        fi
        last_total[$name]=$total
        last_time[$name]=$now
        sum_conns=$((sum_conns + conns))
        in_nginx=""
        [[ " ${upstream[*]} " == *" $name "* ]] && in_nginx=upstream
        out+=$'\n'"$(printf '%-6s %-18s %-6s %-6s %8s %10s %s' "${name%-*}" "$(instance_id "$name")" "$port" "$ready" "$conns" "$rate" "$in_nginx")"
    done
    [ "${#names[@]}" -gt 0 ] || out+=$'\n'"(no wsfleet instance of ours is running: make up)"
    out+=$'\n\n'"$(printf 'fleet: %s connection(s) (registry), %s on these instances, %s msg/s; live colour %s' \
        "$fleet" "$sum_conns" "$sum_rate" "$LIVE")"
    out+=$'\n'"$(p95_line)"
    printf '%s%s\n' "$clear_screen" "$out"
    if [ "$MONITOR_COUNT" -gt 0 ] && [ "$round" -ge "$MONITOR_COUNT" ]; then break; fi
    sleep "$MONITOR_INTERVAL"
done
