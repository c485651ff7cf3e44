#!/usr/bin/env bash
# make scale N=4: the live colour grows or shrinks to N instances, without dropping a count.
#
#   growing:   new instances start, and join nginx's upstream only once their /readyz is 200
#              (config regenerated, graceful reload, wait until nginx serves it);
#   shrinking: nginx stops sending new connections to the removed instances first (reload),
#              then they get SIGTERM and drain (bye, close 1001: their clients resume on the
#              others), and this waits for them to exit.
# The highest-numbered instances go first. RUNTIME=docker: docker compose --scale instead.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${RUNTIME:-native}" = docker ]; then exec bash "$ROOT_DIR/scripts/compose.sh" scale; fi
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"

[ -n "${N:-}" ] || die "say how many instances: make scale N=4"
check_count "$N"
nginx_alive || die "the fleet is not up (no nginx of ours in $(rel "$RUN_DIR")): make up first"
need_tool curl curl
ensure_package jq jq

COLOR="$(live_color)"
mapfile -t current < <(instances "$COLOR")
[ "${#current[@]}" -gt 0 ] || die "no live $COLOR instance: make up starts the fleet again"
began=$SECONDS

if [ "$N" -eq "${#current[@]}" ]; then
    say "$COLOR already has $N instance(s): nothing to do."
    exit 0
fi

if [ "$N" -gt "${#current[@]}" ]; then
    # Grow: the lowest free instance numbers.
    started=()
    n=1
    while [ $((${#current[@]} + ${#started[@]})) -lt "$N" ]; do
        if ! instance_alive "$COLOR-$n"; then
            start_instance "$COLOR-$n"
            started+=("$COLOR-$n")
        fi
        n=$((n + 1))
    done
    if ! wait_ready "${started[@]}"; then
        stop_instances "${started[@]}"
        die "scale failed: the new instances did not become ready (above); nginx was not changed, $COLOR stays at ${#current[@]}"
    fi
    mapfile -t keep < <(instances "$COLOR")
    if ! write_nginx_config "${keep[@]}" || ! nginx_reload; then
        stop_instances "${started[@]}"
        die "scale failed: nginx did not take the new upstream; the new instances were stopped"
    fi
    echo "${#keep[@]}" >"$RUN_DIR/scale"
    say "scaled $COLOR from ${#current[@]} to ${#keep[@]} instance(s) in $((SECONDS - began))s; nginx sends new connections to all of them."
    exit 0
fi

# Shrink: the highest-numbered instances leave.
keep=("${current[@]:0:N}")
leaving=("${current[@]:N}")
write_nginx_config "${keep[@]}" || die "scale failed: nginx refused the new configuration; nothing was stopped"
nginx_reload || die "scale failed: nginx did not take the new configuration; nothing was stopped"
drained=0
for name in "${leaving[@]}"; do
    drained=$((drained + $(local_connections "$name")))
done
stop_instances "${leaving[@]}"
echo "$N" >"$RUN_DIR/scale"
say "scaled $COLOR from ${#current[@]} to $N instance(s) in $((SECONDS - began))s; ${leaving[*]} drained ($drained connection(s) told to resume elsewhere)."
