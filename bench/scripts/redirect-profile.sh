#!/usr/bin/env bash
# Where the time goes on the source's core (0) and the forwarding core (1) while one peer
# forwards: `perf record -e cpu-clock` (this VM has no hardware counters) over both cores for a
# few seconds in the middle of a one-round compare run, then the top symbols per core.
#
#   (as root) bench/scripts/redirect-profile.sh PEER [compare options...]
#   bench/scripts/redirect-profile.sh xdp-redirect --redirect-napi softirq
#   bench/scripts/redirect-profile.sh isopath
# Binaries: $ISOPATH_BIN_DIR (default target/release); $NICE as in redirect-sweep.sh (-15, the
# run's own session and autogroup at that nice).
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
# The run: 2 s warm-up, 10 s counted; perf samples 4 s in the middle of the traffic.
PREFIX="rdp$(( $$ % 10000 ))"
setsid sh -c 'echo "$0" > /proc/self/autogroup; exec "$@"' \
    "$NICE" nice -n "$NICE" "$BIN/isopath-bench" compare --peers "$PEER" --prefix "$PREFIX" \
    --rounds 1 --secs 10 --warmup 2 -q "$@" --out "$OUT/profile-$TAG-report" >"$TXT.compare" 2>&1 &
RUN=$!
# Start-up (lab, peer) takes a few seconds: wait until frames arrive at s0 (or t0 both ways).
arrived() (
    set +o pipefail # no lab yet: nothing to grep
    { ip -n "$PREFIX-far" -s -j link show s0; ip -n "$PREFIX-traffic" -s -j link show t0; } \
        2>/dev/null | grep -o '"rx":{"bytes":[0-9]*,"packets":[0-9]*' | sed 's/.*://' \
        | awk '{s+=$1} END {print s+0}'
)
last=$(arrived)
for _ in $(seq 1 240); do
    sleep 0.25
    now=$(arrived)
    (( now - last > 2000 )) && break
    last=$now
done
sleep 4
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
