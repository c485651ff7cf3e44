#!/usr/bin/env bash
# make up: Redis and one wsfleet instance on this machine, ready when this returns.
#
#   PORT=8000            where the instance listens (127.0.0.1)
#   REDIS_PORT=6379      where our redis-server listens, when we start one
#   REDIS_URL=           an existing Redis to use instead (then no redis-server is started)
#   BROADCAST_TOKEN=     the operator token (default: generated once, kept in .run/token)
#   READY_TIMEOUT=30     seconds to wait for Redis and for /readyz
# Any other setting of the server (LOG_FORMAT, HEARTBEAT_INTERVAL, …) passes through the
# environment unchanged; see the README's configuration table.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${PORT:=8000}"
: "${REDIS_PORT:=6379}"
: "${REDIS_URL:=}"
: "${READY_TIMEOUT:=30}"

INSTANCE=1
PID_FILE="$RUN_DIR/wsfleet-$INSTANCE.pid"
LOG_FILE="$RUN_DIR/wsfleet-$INSTANCE.log"
TOKEN_FILE="$RUN_DIR/token"
BIN="$ROOT_DIR/$WSFLEET_BIN"

summary() {
    local port=$1 token
    token="$(<"$TOKEN_FILE")"
    cat <<EOF

  URL        http://127.0.0.1:$port/
  test page  http://127.0.0.1:$port/test/
  socket     ws://127.0.0.1:$port/ws/chat/?session_uuid=<your-id>
  redis      $(<"$RUN_DIR/redis_url")
  token      $token   (in $RUN_DIR/token)
  broadcast  curl -sS -X POST http://127.0.0.1:$port/broadcast -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' -d '{"message":"hello"}'

  make status | make logs | make down
EOF
}

for p in "$PORT" "$REDIS_PORT"; do
    if ! [[ "$p" =~ ^[0-9]{1,5}$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
        die "PORT and REDIS_PORT must be TCP ports (1-65535), got ${p@Q}"
    fi
done
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

# --- already up? --------------------------------------------------------------------------
if pid_alive "$PID_FILE" "$BIN"; then
    port="$(<"$RUN_DIR/wsfleet-$INSTANCE.port")"
    say "wsfleet is already up (pid $(<"$PID_FILE"), port $port); make down stops it."
    if [ "$port" != "$PORT" ]; then
        say "note: it listens on $port, not PORT=$PORT; make down first to move it."
    fi
    readiness="$(curl -sS -m 3 -w ' (HTTP %{http_code})' "http://127.0.0.1:$port/readyz" 2>&1 || true)"
    if [[ "$readiness" != *"(HTTP 200)" ]]; then
        say "warning: it is not ready: $readiness; see make logs (make down && make up restarts it)" >&2
    fi
    summary "$port"
    exit 0
fi

# --- tools --------------------------------------------------------------------------------
need_cargo
need_tool curl curl
if [ -z "$REDIS_URL" ]; then
    ensure_package redis-server redis-server
    need_tool redis-cli redis-tools
fi

# --- build --------------------------------------------------------------------------------
step "building the release binary (cargo build --release -p wsfleet; the first build takes a few minutes)"
cargo build --release -p wsfleet --bin wsfleet
[ -x "$BIN" ] || die "the build did not produce $BIN"

# --- redis --------------------------------------------------------------------------------
redis_answers() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ]; }

if [ -n "$REDIS_URL" ]; then
    step "using REDIS_URL=$REDIS_URL (no redis-server of ours)"
    if command -v redis-cli >/dev/null 2>&1 &&
        [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" != "PONG" ]; then
        say "warning: $REDIS_URL does not answer PING yet; the instance stays unready until it does" >&2
    fi
    redis_url=$REDIS_URL
elif pid_alive "$RUN_DIR/redis.pid" "redis-server"; then
    redis_port="$(<"$RUN_DIR/redis.port")"
    step "our redis-server is already running on 127.0.0.1:$redis_port (pid $(<"$RUN_DIR/redis.pid"))"
    redis_url="redis://127.0.0.1:$redis_port"
elif port_open "$REDIS_PORT"; then
    # Never join someone else's Redis silently: it may hold another fleet's registry.
    die "127.0.0.1:$REDIS_PORT is already in use by a process make up did not start: set REDIS_PORT to a free port, or REDIS_URL=redis://127.0.0.1:$REDIS_PORT to use that Redis"
else
    step "starting redis-server on 127.0.0.1:$REDIS_PORT (data in $RUN_DIR/redis/)"
    mkdir -p "$RUN_DIR/redis"
    redis_log_start=$(($(wc -c <"$RUN_DIR/redis.log" 2>/dev/null || echo 0) + 1))
    spawn "$RUN_DIR/redis.log" "$RUN_DIR/redis.pid" redis-server --bind 127.0.0.1 \
        --port "$REDIS_PORT" --dir "$ROOT_DIR/$RUN_DIR/redis" --logfile "" --daemonize no
    echo "$REDIS_PORT" >"$RUN_DIR/redis.port"
    redis_pid="$(<"$RUN_DIR/redis.pid")"
    redis_up() { gone "$redis_pid" || redis_answers "$REDIS_PORT"; } # stop early if it died
    if ! wait_until "$READY_TIMEOUT" "redis-server to answer PING" redis_up || gone "$redis_pid"; then
        tail -c "+$redis_log_start" "$RUN_DIR/redis.log" | tail -n 20 >&2 || true
        gone "$redis_pid" && rm -f "$RUN_DIR/redis.pid"
        die "redis-server did not start; its log is above ($RUN_DIR/redis.log)"
    fi
    redis_url="redis://127.0.0.1:$REDIS_PORT"
fi
echo "$redis_url" >"$RUN_DIR/redis_url"

# --- token --------------------------------------------------------------------------------
if [ -n "${BROADCAST_TOKEN:-}" ]; then
    (umask 077 && printf '%s\n' "$BROADCAST_TOKEN" >"$TOKEN_FILE")
elif [ ! -s "$TOKEN_FILE" ]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE" && echo >>"$TOKEN_FILE")
fi
chmod 600 "$TOKEN_FILE"
token="$(<"$TOKEN_FILE")"

# --- the instance -------------------------------------------------------------------------
if port_open "$PORT"; then
    die "127.0.0.1:$PORT is already in use by another process: set PORT to a free port (make up PORT=8001)"
fi
step "starting wsfleet on 127.0.0.1:$PORT (log: $LOG_FILE)"
log_start=$(($(wc -c <"$LOG_FILE" 2>/dev/null || echo 0) + 1)) # show only this run's lines
BIND_ADDR="127.0.0.1:$PORT" REDIS_URL="$redis_url" BROADCAST_TOKEN="$token" \
    spawn "$LOG_FILE" "$PID_FILE" "$BIN"
pid="$(<"$PID_FILE")"
echo "$PORT" >"$RUN_DIR/wsfleet-$INSTANCE.port"

redis_hint() {
    if [ -f "$RUN_DIR/redis.pid" ]; then printf '; our redis-server keeps running (make down stops it)'; fi
}
ready() {
    gone "$pid" && return 0 # stop polling; checked below
    curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$PORT/readyz" 2>/dev/null
}
step "waiting for http://127.0.0.1:$PORT/readyz (up to ${READY_TIMEOUT}s)"
if ! wait_until "$READY_TIMEOUT" "/readyz to answer 200" ready || gone "$pid"; then
    say "--- last lines of $LOG_FILE ---" >&2
    tail -c "+$log_start" "$LOG_FILE" | tail -n 20 >&2 || true
    if gone "$pid"; then
        rm -f "$PID_FILE"
        die "wsfleet exited during start-up (see the log above)$(redis_hint)"
    fi
    curl -sS -m 2 "http://127.0.0.1:$PORT/readyz" >&2 || true
    echo >&2
    stop_pid "$PID_FILE" "$BIN" 15 "wsfleet (not ready)"
    die "wsfleet did not become ready within ${READY_TIMEOUT}s (see the log above)$(redis_hint)"
fi

say "wsfleet is up (pid $pid)."
summary "$PORT"
