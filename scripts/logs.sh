#!/usr/bin/env bash
# make logs: follows the logs of every process make up started, each line prefixed with its
# source (wsfleet instances, nginx access and error logs, redis), until Ctrl-C.
#
# wsfleet and nginx's access log write one JSON object per line: readable as they are; with
# jq installed they are shown as "time level message key=value…" instead (LOG_RAW=1: as is).
#   LOG_LINES=20     lines of history per file before following
#   LOG_FOLLOW=0     print the history and exit instead of following
# RUNTIME=docker: docker compose logs -f instead.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${RUNTIME:-native}" = docker ]; then exec bash "$ROOT_DIR/scripts/compose.sh" logs; fi

: "${LOG_LINES:=20}"
: "${LOG_FOLLOW:=1}"
: "${LOG_RAW:=0}"

mapfile -t logs < <(compgen -G "$RUN_DIR/wsfleet-*.log"; compgen -G "$RUN_DIR/nginx/*.log"; compgen -G "$RUN_DIR/redis.log"; compgen -G "$RUN_DIR/redis-*.log" || true)
[ "${#logs[@]}" -gt 0 ] || die "no logs in $RUN_DIR yet: run make up first"

# One JSON line as "time level message key=value …"; anything else unchanged.
# shellcheck disable=SC2016 # jq's program, not the shell's
JQ_FILTER='
  def rest: (if .source == "nginx" then ["method","uri","status"] else [] end) as $shown
    | to_entries
    | map(select(.key as $k | ["timestamp","time","level","target","message","source","span","spans"] + $shown | index($k) | not))
    | map("\(.key)=\(.value | if type == "string" then . else tojson end)") | join(" ");
  . as $line
  | (try fromjson catch null) as $j
  | if ($j | type) == "object" then
      "\($j.timestamp // $j.time // "") \($j.level // "ACCESS") \($j.message // "\($j.method // "") \($j.uri // "") \($j.status // "")") \($j | rest)"
    else $line end'

pretty=0
if [ "$LOG_RAW" != 1 ] && command -v jq >/dev/null 2>&1; then pretty=1; fi

follow() {
    local file=$1 name
    name="$(basename "$file" .log)"
    [[ "$file" == */nginx/* ]] && name="nginx-$name"
    local tail_args=(-n "$LOG_LINES")
    [ "$LOG_FOLLOW" = 1 ] && tail_args+=(-F)
    if [ "$pretty" = 1 ]; then
        tail "${tail_args[@]}" "$file" 2>/dev/null | jq -R -r --unbuffered "$JQ_FILTER" |
            awk -v p="$name" '{ print p " | " $0; fflush() }'
    else
        tail "${tail_args[@]}" "$file" 2>/dev/null | awk -v p="$name" '{ print p " | " $0; fflush() }'
    fi
}

[ "$LOG_FOLLOW" = 1 ] && say "following ${#logs[@]} logs in $RUN_DIR (Ctrl-C to stop)" >&2
for file in "${logs[@]}"; do
    follow "$file" &
done
wait
