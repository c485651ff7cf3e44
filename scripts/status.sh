#!/usr/bin/env bash
# make status: the instance's GET /status, pretty-printed (jq, else python3, else raw).
#
#   PORT   the instance to ask (default: the one make up started, else 8000)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -z "${PORT:-}" ] && [ -f "$RUN_DIR/wsfleet-1.port" ]; then
    PORT="$(<"$RUN_DIR/wsfleet-1.port")"
fi
: "${PORT:=8000}"

need_tool curl curl
url="http://127.0.0.1:$PORT/status"
if ! body="$(curl -fsS -m 5 "$url" 2>/dev/null)"; then
    die "no answer from $url: is wsfleet up? (make up)"
fi
printf '%s\n' "$body" | show_json
