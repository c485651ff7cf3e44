#!/usr/bin/env bash
# make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="session_query duration"]: runs each cargo-fuzz
# target of fuzz/ (libFuzzer, AddressSanitizer) for FUZZ_SECONDS, starting from the seeds in
# fuzz/seeds/<target> and the corpus earlier runs left in fuzz/corpus/<target>. A crash stops
# the run; libFuzzer saves the input under fuzz/artifacts/<target>/ and prints how to replay it.
#
# cargo-fuzz is installed when missing (cargo install --locked cargo-fuzz, a few minutes).
# It wants a nightly toolchain for its -Z flags; RUSTC_BOOTSTRAP=1 lets stable rustc take
# them, so no nightly is needed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_cargo
: "${FUZZ_SECONDS:=60}"
[[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a whole number of seconds, got ${FUZZ_SECONDS@Q}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "cargo-fuzz not found: cargo install --locked cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cd "$ROOT_DIR/fuzz"
export RUSTC_BOOTSTRAP=1
targets=()
if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list)
fi
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    step "cargo fuzz run $target for ${FUZZ_SECONDS}s"
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1
done
say "fuzzing done: ${targets[*]}, ${FUZZ_SECONDS}s each, no crash."
