#!/usr/bin/env bash
# The disruption run with 200 reference JavaScript clients (issue 15, docs/BENCHMARKS.md):
# a drain, a blue-green promotion and a SIGKILL under counting, room and broadcast traffic, and
# what was lost and repeated. The run itself is clients/js/bench/disruption.mjs; it starts its
# own redis-server and wsfleet processes on free loopback ports and stops them by their pids.
#
#   bash scripts/bench-tools/js-disruption.sh            # release build, 200 clients
#   CLIENTS=50 PHASE_S=2 bash scripts/bench-tools/js-disruption.sh
#   WSFLEET_BIN=target/debug/wsfleet bash scripts/bench-tools/js-disruption.sh   # no build
#
# Exit 1 when anything was lost or repeated.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server node npm
if [ -z "${WSFLEET_BIN:-}" ]; then
    cargo build --release --quiet --bin wsfleet
    WSFLEET_BIN="$PWD/target/release/wsfleet"
fi
export WSFLEET_BIN
cd clients/js
[ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error
echo "source $(git rev-parse --short HEAD), $(nproc) cores, binary $WSFLEET_BIN" >&2
node bench/disruption.mjs # not exec: the exit trap removes the scratch directory
