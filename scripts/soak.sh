#!/usr/bin/env bash
# Runs the privileged integration phase N times in a row and prints, per test, how many of the
# N runs failed, so that a test failing even once in twenty shows up. As root; builds first.
#
#   scripts/soak.sh [N=20] [TEST-FILTER...]   e.g. scripts/soak.sh 20, scripts/soak.sh 5 --test bond
#
# Each run holds the lab lock ($ISOPATH_LAB_LOCK, default /tmp/isopath-lab.lock); the lock is free
# for $ISOPATH_SOAK_GAP_S seconds (default 3) between runs.
#
# Logs of each run are kept in $ISOPATH_SOAK_DIR (default /tmp/isopath-soak.<pid>).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
isopath_deps
[ "$(id -u)" -eq 0 ] || { echo "soak.sh: run as root (the lab needs namespaces, veth, AF_XDP)" >&2; exit 2; }

N=${1:-20}
shift || true
DIR=${ISOPATH_SOAK_DIR:-/tmp/isopath-soak.$$}
mkdir -p "$DIR"
export ISOPATH_REQUIRE_PRIV=1 CARGO_TERM_COLOR=never ISOPATH_BIN_DIR="$PWD/target/release"

cargo build --release --locked --workspace --bins
cargo test --locked -p isopath-tests --no-run "$@"

t0=$SECONDS
for i in $(seq "$N"); do
    s=$SECONDS
    # One run holds the lab lock (as scripts/test.sh's integration phase does), so other users of
    # the lab on this machine wait for the run, not interleave with it; between runs it is free.
    if flock "${ISOPATH_LAB_LOCK:-/tmp/isopath-lab.lock}" \
        cargo test --locked -p isopath-tests --no-fail-fast "$@" -- --test-threads=1 \
        > "$DIR/run-$i.log" 2>&1; then rc=ok; else rc=FAILED; fi
    sleep "${ISOPATH_SOAK_GAP_S:-3}"
    left=$(ip netns list 2>/dev/null | wc -l)
    echo "soak: run $i/$N $rc ($((SECONDS - s)) s; namespaces left: $left)"
done

echo "soak: $N runs in $((SECONDS - t0)) s; logs in $DIR"
printf '%-72s %s\n' "test" "failed/runs"
grep -hE '^test .* \.\.\. (ok|FAILED)$' "$DIR"/run-*.log |
    awk -v n="$N" '{ t=$2; runs[t]++; if ($NF == "FAILED") bad[t]++ }
        END { for (t in runs) printf "%-72s %d/%d\n", t, bad[t] + 0, runs[t] }' |
    sort -k2,2r -k1,1
if grep -qE '^test .* \.\.\. FAILED$' "$DIR"/run-*.log; then exit 1; fi
