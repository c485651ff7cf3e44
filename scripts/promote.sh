#!/usr/bin/env bash
# make promote: blue-green switch to a freshly built binary, with a smoke test and rollback.
#
#   1. build (unless SKIP_BUILD=1) wsfleet and wsfleet-loadtest;
#   2. start the other colour with as many instances as the live one, from that build;
#   3. smoke-test every new instance directly on its loopback port (wsfleet-loadtest smoke:
#      /readyz, a socket whose two frames count 1 and 2, then two sockets in a private room
#      smoke-<random>: one publishes, the other receives it at offset 1, and an operator
#      POST /broadcast to that room arrives at offset 2). Nothing reaches real users: no
#      broadcast to the fleet, no room anyone else is in;
#   4. point nginx's upstream at the new colour and reload gracefully;
#   5. SIGTERM the old colour (its sockets get bye and close 1001 and resume on the new one) and
#      wait for it to exit.
# If 2, 3 or 4 fails, the new colour is stopped and nginx keeps (or gets back) the old upstream:
# traffic never moves. A clear message and exit code 1 say so.
#
#   PROMOTE_ENV="NAME=VALUE ..."   extra environment for the new colour only (e.g. to try a
#                                  setting; the tests use it to inject a broken configuration)
#   RUNTIME=docker                 the same with docker compose (scripts/compose.sh)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${RUNTIME:-native}" = docker ]; then exec bash "$ROOT_DIR/scripts/compose.sh" promote; fi
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"

began=$SECONDS
nginx_alive || die "the fleet is not up (no nginx of ours in $(rel "$RUN_DIR")): make up first"
need_tool curl curl
ensure_package jq jq
OLD="$(live_color)"
NEW="$(other_color "$OLD")"
mapfile -t old_names < <(instances "$OLD")
[ "${#old_names[@]}" -gt 0 ] || die "no live $OLD instance to promote from: make up first"
N=${#old_names[@]}

extra_env=()
read -r -a promote_words <<<"${PROMOTE_ENV:-}"
for word in "${promote_words[@]}"; do
    [[ "$word" =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] || die "PROMOTE_ENV takes NAME=VALUE words, got ${word@Q}"
    extra_env+=("$word")
done

# Leftovers of an interrupted promote: never in nginx's upstream, so safe to stop.
mapfile -t leftovers < <(instances "$NEW")
if [ "${#leftovers[@]}" -gt 0 ]; then
    say "note: stopping leftover $NEW instances from an earlier attempt: ${leftovers[*]}"
    stop_instances "${leftovers[@]}"
fi

build_release wsfleet wsfleet-loadtest
install_binary "$NEW"
built=$SECONDS

# rollback REASON: stop the new colour, make sure nginx serves the old one, exit 1.
new_names=()
rollback() {
    say "" >&2
    say "promote FAILED: $1" >&2
    if [ "${#new_names[@]}" -gt 0 ]; then
        stop_instances "${new_names[@]}" >&2
    fi
    if [ "$(upstream_names | head -n 1)" != "${old_names[0]}" ]; then
        if write_nginx_config "${old_names[@]}" >&2; then nginx_reload >&2 || true; fi
    fi
    die "rolled back: $NEW was stopped, traffic stays on $OLD (${#old_names[@]} instance(s)); nothing moved"
}

step "promote: $OLD -> $NEW, $N instance(s)"
for ((n = 1; n <= N; n++)); do
    start_instance "$NEW-$n" "${extra_env[@]}"
    new_names+=("$NEW-$n")
done
wait_ready "${new_names[@]}" || rollback "the new $NEW instances did not become ready"

token="$(<"$TOKEN_FILE")"
# With authentication on, the smoke sockets sign their own tokens with the fleet's secret.
auth=()
if [ -s "$AUTH_SECRET_FILE" ]; then auth=(LOADTEST_AUTH_SECRET="$(<"$AUTH_SECRET_FILE")"); fi
for name in "${new_names[@]}"; do
    port="$(instance_port "$name")"
    step "smoke test of $name on 127.0.0.1:$port"
    if ! env "${auth[@]}" LOADTEST_TOKEN="$token" timeout 30 "$LOADTEST_BIN" smoke \
        --url "ws://127.0.0.1:$port/ws/chat/" --http "http://127.0.0.1:$port"; then
        rollback "the smoke test of $name failed (above)"
    fi
done

write_nginx_config "${new_names[@]}" || rollback "nginx refused the configuration for $NEW"
nginx_reload || rollback "nginx did not take the configuration for $NEW"
echo "$NEW" >"$RUN_DIR/color"
echo "$N" >"$RUN_DIR/scale"
say "nginx now sends new connections to $NEW."

drained=0
for name in "${old_names[@]}"; do
    drained=$((drained + $(local_connections "$name")))
done
stop_instances "${old_names[@]}"

cat <<SUMMARY

  promoted   $OLD -> $NEW
  instances  $N:$(for name in "${new_names[@]}"; do printf ' 127.0.0.1:%s' "$(instance_port "$name")"; done)
  took       $((SECONDS - began))s (build $((built - began))s, start, smoke test, switch and drain $((SECONDS - built))s)
  drained    $drained connection(s) from $OLD, told to resume on $NEW
SUMMARY
