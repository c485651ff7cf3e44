#!/usr/bin/env bash
# make test: the whole workspace's tests. The integration tests start their own
# redis-server processes on free ports, so redis-server must be on PATH.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_cargo
need_tool redis-server redis-server
step "cargo test --workspace"
exec cargo test --workspace "$@"
