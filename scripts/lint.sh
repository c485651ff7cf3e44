#!/usr/bin/env bash
# make lint: formatting and clippy, warnings as errors.  make fmt: format the code.
#
#   lint.sh         cargo fmt --check, then clippy on every target of the workspace
#   lint.sh --fix   cargo fmt (rewrites files)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_cargo
cargo fmt --version >/dev/null 2>&1 ||
    die "rustfmt not found: install it with rustup component add rustfmt"

if [ "${1:-}" = "--fix" ]; then
    step "cargo fmt --all"
    exec cargo fmt --all
fi

cargo clippy --version >/dev/null 2>&1 ||
    die "clippy not found: install it with rustup component add clippy"
step "cargo fmt --all -- --check"
cargo fmt --all -- --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
