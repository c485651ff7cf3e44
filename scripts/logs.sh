#!/usr/bin/env bash
# make logs: follows the logs of every process make up started (Ctrl-C to stop).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mapfile -t logs < <(compgen -G "$RUN_DIR/*.log" || true)
[ "${#logs[@]}" -gt 0 ] || die "no logs in $RUN_DIR yet: run make up first"
exec tail -n 50 -F "${logs[@]}"
