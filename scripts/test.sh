#!/usr/bin/env bash
# make test: everything, as CI runs it.
#   1. cargo build (dev profile) of the server, the load tester and the bench ceiling: the
#      fleet's end-to-end test (tests/fleet) drives the real make targets with these binaries
#      (SKIP_BUILD=1), tests/half_open.rs runs the load tester as its clients, and
#      ceiling/tests runs the load tester against the ceiling, because a
#      cargo build inside `cargo test` would wait forever for the build lock cargo test holds.
#      The dev profile shares every compiled dependency with cargo test; release would not;
#   2. the static checks of compose/ (scripts/check-compose.sh), of deploy/kubernetes/
#      (scripts/check-kubernetes.sh: kubectl kustomize, kubernetes-validate) and of the Prometheus config and
#      alert rules, with their unit tests (observability/check.sh, promtool);
#   3. cargo test --workspace (tests/browser drives headless Chromium through chromedriver).
#      The integration tests start their own redis-server processes (and the fleet test its own
#      nginx) on free ports, so redis-server and nginx must be on PATH.
#      tests/half_open.rs needs root and iproute2's `ip` (it builds a network namespace); it fails
#      with one line saying so otherwise (CI runs as root);
#   4. the JavaScript client's tests (clients/js, node's test runner against redis-server and the
#      wsfleet binary of step 1). Node 18+ and npm are installed with apt-get as root when
#      missing; otherwise the step is skipped with one line saying what to install.
# Arguments go to cargo test (e.g. make test ARGS=… is not needed: bash scripts/test.sh --test fleet).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_cargo
ensure_package redis-server redis-server
ensure_package nginx nginx
need_tool curl curl
ensure_package jq jq
ensure_package chromium chromium
ensure_package chromedriver chromium-driver
ensure_package ip iproute2
step "cargo build -p wsfleet -p wsfleet-loadtest -p wsfleet-ceiling (for the fleet, half-open and ceiling tests)"
cargo build -p wsfleet -p wsfleet-loadtest -p wsfleet-ceiling
bash "$ROOT_DIR/scripts/check-compose.sh"
bash "$ROOT_DIR/scripts/check-kubernetes.sh"
step "observability/check.sh (promtool check config, check rules, test rules)"
bash "$ROOT_DIR/observability/check.sh"
step "cargo test --workspace"
# The output as it comes, and one closing line with the totals of every test binary: the last
# binary cargo runs is a doc-test run of 0 tests, which would otherwise be the last word.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
passed="$(sed -n 's/^test result: .*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1/p' "$log" | awk '{ s += $1 } END { print s + 0 }')"
failed="$(sed -n 's/^test result: .*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\2/p' "$log" | awk '{ s += $1 } END { print s + 0 }')"

# The JavaScript client: its TAP summary ("# pass N", "# fail N") joins the totals.
if is_root && has_apt; then
    ensure_package node nodejs
    ensure_package npm npm
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    step "clients/js: npm ci && node --test (against redis-server and $CARGO_TARGET_DIR/debug/wsfleet)"
    js_bin="$CARGO_TARGET_DIR/debug/wsfleet"
    case "$js_bin" in /*) ;; *) js_bin="$ROOT_DIR/$js_bin" ;; esac
    js_log="$(mktemp)"
    trap 'rm -f "$log" "$js_log"' EXIT
    js_status=0
    (cd "$ROOT_DIR/clients/js" && npm ci --no-audit --no-fund --loglevel=error &&
        WSFLEET_BIN="$js_bin" node --test --test-reporter=tap test/*.test.js) 2>&1 | tee "$js_log" || js_status=$?
    js_passed="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$js_log" | tail -n 1)"
    js_failed="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$js_log" | tail -n 1)"
    if [ -z "$js_passed" ]; then
        js_failed=1 # npm ci or node failed before any test ran: count it, do not hide it
    fi
    passed=$((passed + ${js_passed:-0}))
    failed=$((failed + ${js_failed:-0}))
    [ "$js_status" -eq 0 ] || status=$js_status
else
    echo "SKIPPED: the JavaScript client's tests (clients/js): node and npm not found (apt-get install -y nodejs npm)"
fi
echo "tests: $passed passed, $failed failed"
exit "$status"
