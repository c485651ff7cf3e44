# shellcheck shell=bash
# Our own Prometheus for the native fleet (docs/OBSERVABILITY.md). Sourced after lib-fleet.sh.
#
#   PROMETHEUS=auto      (default) start it when the `prometheus` binary is installed
#   PROMETHEUS=1         install it first (apt-get, as root) when missing
#   PROMETHEUS=0         never start it
#   PROMETHEUS_PORT=9090 where it listens (loopback only)
#
# It runs observability/prometheus.yml, which scrapes every instance through the target file
# that make up, scale and promote keep current (observability/targets/wsfleet.json). Only the
# default run directory writes that file, so a fleet in another RUN_DIR runs without it.
# A Prometheus that fails to start is reported, never fatal: the fleet serves without it.

: "${PROMETHEUS:=auto}"
: "${PROMETHEUS_PORT:=9090}"
PROMETHEUS_PID="$RUN_DIR/prometheus.pid"

prometheus_alive() { pid_alive "$PROMETHEUS_PID" prometheus; }

prometheus_ready() {
    curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null
}

# prometheus_start: starts ours when PROMETHEUS asks for it; says why when it does not.
prometheus_start() {
    case "$PROMETHEUS" in
    0 | no | false) return 0 ;;
    1 | yes | true) ensure_package prometheus prometheus ;;
    *) command -v prometheus >/dev/null 2>&1 || return 0 ;;
    esac
    prometheus_alive && return 0
    if [ "$PROMETHEUS_TARGETS" != "$ROOT_DIR/observability/targets/wsfleet.json" ]; then
        say "note: prometheus not started: it reads observability/targets/, and this fleet writes its targets to $(rel "$PROMETHEUS_TARGETS")"
        return 0
    fi
    if port_open "$PROMETHEUS_PORT"; then
        say "note: prometheus not started: 127.0.0.1:$PROMETHEUS_PORT is taken (set PROMETHEUS_PORT, or PROMETHEUS=0)"
        return 0
    fi
    step "starting prometheus on 127.0.0.1:$PROMETHEUS_PORT (data in $(rel "$RUN_DIR/prometheus")/)"
    mkdir -p "$RUN_DIR/prometheus"
    spawn "$RUN_DIR/prometheus.log" "$PROMETHEUS_PID" prometheus \
        --config.file="$ROOT_DIR/observability/prometheus.yml" \
        --storage.tsdb.path="$RUN_DIR/prometheus" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
    if ! wait_until "$READY_TIMEOUT" "prometheus to be ready" prometheus_ready; then
        tail -n 20 "$RUN_DIR/prometheus.log" >&2 || true
        stop_pid "$PROMETHEUS_PID" prometheus 5 prometheus
        say "warning: prometheus did not start (its log is above); the fleet runs without it" >&2
    fi
}

prometheus_stop() { stop_pid "$PROMETHEUS_PID" prometheus 10 prometheus; }

# prometheus_line: the summary line for make up and make status.
prometheus_line() {
    if prometheus_alive; then
        printf '  prometheus http://127.0.0.1:%s/  (alerts: /alerts, targets: /targets)\n' "$PROMETHEUS_PORT"
    fi
}
