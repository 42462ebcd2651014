#!/usr/bin/env bash
# Where the time goes on the source's core (0) and the forwarding core (1) while one peer
# forwards: `perf record -e cpu-clock` (this VM has no hardware counters) over both cores for a
# few seconds in the middle of a one-round compare run, then the top symbols per core.
#
#   (as root) bench/scripts/redirect-profile.sh PEER [compare options...]
#   bench/scripts/redirect-profile.sh xdp-redirect --redirect-napi softirq
#   bench/scripts/redirect-profile.sh isopath
# Binaries: $ISOPATH_BIN_DIR (default target/release); $NICE as in redirect-sweep.sh (-15).
# Writes $OUT/profile-PEER.data and $OUT/profile-PEER.txt (default OUT=/tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."

PEER=${1:?usage: redirect-profile.sh PEER [compare options...]}
shift
BIN=${ISOPATH_BIN_DIR:-$PWD/target/release}
NICE=${NICE:--15}
OUT=${OUT:-/tmp}
TAG=${TAG:-$PEER}
DATA="$OUT/profile-$TAG.data"
TXT="$OUT/profile-$TAG.txt"
export ISOPATH_BIN_DIR=$BIN
command -v perf >/dev/null || { echo "perf is not installed (scripts/deps.sh --peers)" >&2; exit 1; }

# The lab lock for the whole profile (the compare run inherits it): no other lab's traffic.
exec 9>/tmp/isopath-lab.lock
flock 9
# The run: 2 s warm-up, 10 s counted; perf samples 4 s from the third second counted.
nice -n "$NICE" "$BIN/isopath-bench" compare --peers "$PEER" \
    --rounds 1 --secs 10 --warmup 2 -q "$@" --out "$OUT/profile-$TAG-report" >"$TXT.compare" 2>&1 &
RUN=$!
# Start-up (lab, peer) takes a few seconds: wait for this run's source, then into the window.
for _ in $(seq 1 120); do
    pgrep -P "$RUN" -f "gen --iface t0" >/dev/null && break
    sleep 0.25
done
sleep 5
perf record -e cpu-clock -C 0,1 -o "$DATA" -- sleep 4 2>/dev/null
wait "$RUN"
{
    echo "# $PEER $* ($(uptime | sed 's/.*load/load/'))"
    grep -E "^\| $PEER " "$TXT.compare" || true
    for cpu in 0 1; do
        echo "## core $cpu: by command"
        perf report -i "$DATA" --cpu "$cpu" --no-children --sort comm --stdio 2>/dev/null \
            | grep -E '^ +[0-9]' | head -8 || true
        echo "## core $cpu: top symbols"
        perf report -i "$DATA" --cpu "$cpu" --no-children --sort sym --stdio 2>/dev/null \
            | grep -E '^ +[0-9]' | head -25 || true
    done
} >"$TXT"
cat "$TXT"
