#!/usr/bin/env bash
# The xdp-redirect peer's configurations, each next to isopath in the same compare run (A B A B),
# then the four forwarders side by side with the configuration given as BEST. Every run takes
# the lab lock for itself only (about a minute each) and prints the machine's load before it.
#
#   (as root) bench/scripts/redirect-sweep.sh [ROUNDS=3] [SECS=5]
#   BEST="--redirect-napi softirq" OUT=bench/results bench/scripts/redirect-sweep.sh
#   ONLY="final" ...      run only the runs whose name contains the word
#   NICE=0 ...            priority of every peer and source (default -15: a shared machine's
#                         compilers cannot take their cores; the threaded NAPI threads get it too)
# Binaries: $ISOPATH_BIN_DIR (isopathd and isopath-bench), default target/release. Reports go
# to $OUT/redirect-NAME/ (report.json, summary.md, peers.svg).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${1:-3}
SECS=${2:-5}
OUT=${OUT:-bench/results}
BIN=${ISOPATH_BIN_DIR:-$PWD/target/release}
BEST=${BEST:---redirect-napi softirq}
ONLY=${ONLY:-}
NICE=${NICE:--15}
export ISOPATH_BIN_DIR=$BIN

run() {
    local name=$1 peers=$2
    shift 2
    if [[ -n $ONLY && $name != *$ONLY* ]]; then
        return 0
    fi
    echo "== $name: --peers $peers $* ($(uptime | sed 's/.*load/load/'))" >&2
    flock /tmp/isopath-lab.lock nice -n "$NICE" "$BIN/isopath-bench" compare --peers "$peers" \
        --rounds "$ROUNDS" --secs "$SECS" -q "$@" --out "$OUT/redirect-$name" \
        | grep -E '^\| (isopath|xsk-fwd|testpmd|xdp-redirect) ' || true
}

P=isopath,xdp-redirect
# Where the redirect runs: up0's NAPI threaded on core 1 (the forwarder's core) or in the
# source's softirq on core 0; the thread at SCHED_FIFO so no compiler delays it.
run threaded-map "$P" --redirect-napi threaded
run softirq-map "$P" --redirect-napi softirq
run threaded-fifo "$P" --redirect-napi threaded --redirect-napi-fifo 10
# devmap vs bpf_redirect.
run threaded-direct "$P" --redirect-napi threaded --redirect-via direct
run softirq-direct "$P" --redirect-napi softirq --redirect-via direct
# What the far veths run to accept redirected frames: GRO (default) or an XDP_PASS program.
run threaded-farxdp "$P" --redirect-napi threaded --redirect-far xdp
run softirq-farxdp "$P" --redirect-napi softirq --redirect-far xdp
# Generic (skb) XDP.
run threaded-generic "$P" --redirect-napi threaded --redirect-mode generic
# A paced source at the AF_XDP path's rate: can the threaded redirect keep up without loss?
run threaded-1m "$P" --redirect-napi threaded --rate 1M
# The four forwarders in one run, the chosen configuration, one way and both ways.
# shellcheck disable=SC2086
run final isopath,xsk-fwd,testpmd,xdp-redirect $BEST
# shellcheck disable=SC2086
run final-both-ways isopath,xsk-fwd,testpmd,xdp-redirect --both-ways $BEST
