#!/usr/bin/env bash
# isopath's whole test suite: formatting, lints, unit tests, the privileged integration tests on
# a real veth lab, and a compile of the benchmarks and fuzz targets. Prints each phase with its
# time; exits non-zero on the first failure.
#
# Run as root: the integration tests create network namespaces, veths and AF_XDP sockets. As
# root, ISOPATH_REQUIRE_PRIV=1 is set, so a privileged test that would skip fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
isopath_deps

if [ "$(id -u)" -eq 0 ]; then
    export ISOPATH_REQUIRE_PRIV=1
else
    echo "test.sh: not root: the privileged integration tests will print SKIP and not run" >&2
fi
export CARGO_TERM_COLOR=never

phase() {
    local name=$1
    shift
    local t0=$SECONDS
    echo "=== phase: $name"
    "$@"
    echo "=== phase: $name ok ($((SECONDS - t0)) s)"
}

phase "fmt" cargo fmt --all -- --check
phase "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
phase "unit tests" cargo test --locked
phase "release build" cargo build --release --locked --workspace --bins
export ISOPATH_BIN_DIR="$PWD/target/release"
# One lab at a time: the tests pin the worker and the traffic source to the two cores. The lock
# also keeps two checkouts on one machine (or a benchmark) from running labs at once.
cargo test --locked -p isopath-tests --no-run
phase "integration tests (privileged, veth lab)" \
    flock "${ISOPATH_LAB_LOCK:-/tmp/isopath-lab.lock}" \
    cargo test --locked -p isopath-tests -- --test-threads=1
phase "bench compile" cargo bench --locked --workspace --no-run
phase "fuzz compile" cargo build --locked -p isopath-fuzz --bins
# The parser target (packet views and the classify pass) under libFuzzer for 60 s. cargo-fuzz
# needs a nightly toolchain (sanitizer flags); the datapath is built without its XDP modules.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    # The corpus directories are the fuzzers' working sets (not committed); the seeds are.
    mkdir -p fuzz/corpus/parser fuzz/corpus/proto
    phase "fuzz parser 60 s (nightly)" \
        cargo +nightly fuzz run parser --no-default-features fuzz/corpus/parser fuzz/seeds/parser \
        -- -max_total_time=60
    # The control protocol's decoders (requests and replies, lax and strict).
    phase "fuzz proto 60 s (nightly)" \
        cargo +nightly fuzz run proto fuzz/corpus/proto fuzz/seeds/proto -- -max_total_time=60
else
    echo "=== phase: fuzz parser and proto: SKIPPED, no nightly toolchain installed (rustup toolchain list)"
fi
echo "=== all phases ok (${SECONDS} s)"
