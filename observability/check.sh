#!/usr/bin/env bash
# Checks the Prometheus side of observability/ with promtool (Debian's `prometheus` package):
#   promtool check config  observability/prometheus.yml
#   promtool check rules   observability/alerts.yml
#   promtool test rules    observability/alerts.test.yml   (unit tests of every alert)
# As root with apt-get and no promtool, installs `prometheus` first (and stops the service if
# the package started it: only promtool is wanted). PROMTOOL=/path/to/promtool overrides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

install_promtool() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "error: promtool not found: install it (apt-get install -y prometheus) and run again" >&2
        exit 1
    fi
    local before after pid
    before=" $(pgrep -x prometheus | tr '\n' ' ' || true) "
    echo "==> apt-get install -y prometheus (for promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package's postinst may start the server; we did not ask for it, so stop what it started.
    after="$(pgrep -x prometheus || true)"
    for pid in $after; do
        case "$before" in
            *" $pid "*) ;;
            *)
                if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
                    systemctl stop prometheus.service || true
                fi
                kill "$pid" 2>/dev/null || true
                ;;
        esac
    done
}

PROMTOOL="${PROMTOOL:-}"
if [ -z "$PROMTOOL" ]; then
    command -v promtool >/dev/null 2>&1 || install_promtool
    PROMTOOL="$(command -v promtool)"
fi

echo "==> $("$PROMTOOL" --version 2>&1 | head -n 1)"
echo "==> promtool check config observability/prometheus.yml"
"$PROMTOOL" check config prometheus.yml
echo "==> promtool check rules observability/alerts.yml"
"$PROMTOOL" check rules alerts.yml
echo "==> promtool test rules observability/alerts.test.yml"
"$PROMTOOL" test rules alerts.test.yml
echo "==> observability checks passed"
