#!/usr/bin/env bash
# Fuzzes the gateway's upstream response parser and chunk decoder with
# cargo-fuzz (libFuzzer, nightly) for a bounded time, seeded with the recorded
# responses the property tests use. Not run in CI.
#
#   bench/fuzz-upstream.sh [SECONDS]      (default 60)
#
# Needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`.
# A crash is saved under services/gateway/fuzz/artifacts/upstream_response/:
# fix it, and add the input to services/gateway/tests/corpus/responses/ (if it
# is a whole response) or as a regression test beside the code it broke.
set -euo pipefail

seconds=${1:-60}
cd "$(dirname "$0")/../services/gateway/fuzz"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-upstream: needs cargo-fuzz on nightly (cargo install cargo-fuzz)" >&2
    exit 1
fi
mkdir -p corpus/upstream_response
cp ../tests/corpus/responses/*.http corpus/upstream_response/
cargo +nightly fuzz run upstream_response corpus/upstream_response -- -max_total_time="$seconds"
