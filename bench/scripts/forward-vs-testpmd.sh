#!/usr/bin/env bash
# Forwarding rate of isopath vs dpdk-testpmd io-forward (net_af_xdp) on the same veth lab path
# (t0 -> up0 -> forwarder -> m0 -> s0), the same source (testpmd txonly over AF_XDP on t0, all of
# its threads on core 0) and the same forwarding core (1). Runs alternate A B A B to cancel the
# machine's drift. Arrivals are counted on the sink veth s0 (kernel rx_packets; an nftables ingress drop
# there discards them cheaply, so the far bridge does no work).
#
#   (as root) bench/scripts/forward-vs-testpmd.sh [ROUNDS=3] [SECS=10]
# Prints one line per run and a summary with medians and the ratio; JSON to $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/deps.sh
isopath_deps
isopath_peer_deps

ROUNDS=${1:-3}
SECS=${2:-10}
PREFIX="cmp$(( $$ % 100000 ))"
WORK=$(mktemp -d /tmp/isopath-cmp.XXXXXX)
BIN="$PWD/target/release"
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    deploy/lab.sh down "$PREFIX" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --locked --workspace --bins 2>&1 | tail -1
deploy/lab.sh up "$PREFIX" >/dev/null
eval "$(deploy/lab.sh env "$PREFIX")"
# nftables netdev ingress (this kernel has no tc classifiers built in).
ip netns exec "$LAB_NS_FAR" nft add table netdev sink
ip netns exec "$LAB_NS_FAR" nft add chain netdev sink in '{ type filter hook ingress device s0 priority 0; }'
ip netns exec "$LAB_NS_FAR" nft add rule netdev sink in drop

rx_s0() { ip -n "$LAB_NS_FAR" -s -j link show s0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }
tx_t0() { ip -n "$LAB_NS_TRAFFIC" -s -j link show t0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["packets"])'; }

stop_pid() {
    local p=$1
    kill -INT "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}

start_isopath() {
    cat > "$WORK/isopath.toml" <<TOML
[daemon]
control_socket = "/run/isopath/$PREFIX.sock"
[rings]
busy_poll_budget = ${ISOPATH_BUSY_POLL:-0}
[workers]
cores = [1]
[[port]]
name = "up0"
[[port]]
name = "m0"
[[cross_connect]]
a = "up0"
b = "m0"
TOML
    # --force: a testpmd killed mid-run may leave its libxdp program behind.
    ip netns exec "$LAB_NS_APP" "$BIN/isopathd" -c "$WORK/isopath.toml" --force 2> "$WORK/fwd.log" &
    FWD=$!
    for _ in $(seq 100); do grep -q ' ready ' "$WORK/fwd.log" && return 0; sleep 0.1; done
    cat "$WORK/fwd.log" >&2; return 1
}

start_testpmd_fwd() {
    ip netns exec "$LAB_NS_APP" dpdk-testpmd -l 0,1 --main-lcore 0 --no-pci --no-huge -m 256 \
        --file-prefix "${PREFIX}f" --log-level=pmd.net.af_xdp:error \
        --vdev net_af_xdp0,iface=up0 --vdev net_af_xdp1,iface=m0 -- \
        --forward-mode=io --nb-cores=1 --total-num-mbufs=16384 --auto-start --stats-period 60 \
        > "$WORK/fwd.log" 2>&1 < /dev/null &
    FWD=$!
    sleep 3
    kill -0 "$FWD" 2>/dev/null || { cat "$WORK/fwd.log" >&2; return 1; }
}

start_source() {
    ip netns exec "$LAB_NS_TRAFFIC" dpdk-testpmd --lcores 0@0,1@0 --main-lcore 0 --no-pci --no-huge \
        -m 256 --file-prefix "${PREFIX}g" --log-level=pmd.net.af_xdp:error \
        --vdev net_af_xdp0,iface=t0 -- --forward-mode=txonly --txpkts=60 \
        --tx-ip=198.18.0.1,198.18.0.2 --eth-peer=0,"$LAB_FAR_MAC" --nb-cores=1 \
        --total-num-mbufs=16384 --auto-start --stats-period 60 > "$WORK/src.log" 2>&1 < /dev/null &
    SRC=$!
    sleep 2
    kill -0 "$SRC" 2>/dev/null || { cat "$WORK/src.log" >&2; return 1; }
}

measure() { # name
    local name=$1 r0 t0 r1 t1
    start_source
    PIDS=("$FWD" "$SRC")
    sleep 2                      # warm-up: drop the first seconds
    r0=$(rx_s0); t0=$(tx_t0)
    sleep "$SECS"
    r1=$(rx_s0); t1=$(tx_t0)
    stop_pid "$SRC"; stop_pid "$FWD"; PIDS=()
    sleep 1
    python3 -c "print(f'$name fwd_mpps={($r1-$r0)/$SECS/1e6:.3f} offered_mpps={($t1-$t0)/$SECS/1e6:.3f}')"
}

: > "$WORK/results"
for round in $(seq "$ROUNDS"); do
    start_isopath;      measure isopath  | tee -a "$WORK/results"
    start_testpmd_fwd;  measure testpmd  | tee -a "$WORK/results"
done

python3 - "$WORK/results" "${OUT:-}" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
res = {}
for name, fwd, off in rows:
    res.setdefault(name, {"fwd": [], "offered": []})
    res[name]["fwd"].append(float(fwd.split("=")[1]))
    res[name]["offered"].append(float(off.split("=")[1]))
summary = {n: {"fwd_mpps_median": statistics.median(v["fwd"]), "fwd_mpps": v["fwd"],
               "offered_mpps_median": statistics.median(v["offered"])} for n, v in res.items()}
ratio = summary["isopath"]["fwd_mpps_median"] / summary["testpmd"]["fwd_mpps_median"]
summary["ratio_isopath_over_testpmd"] = ratio
for n in ("isopath", "testpmd"):
    s = summary[n]
    print(f"{n:8s} forwarded median {s['fwd_mpps_median']:.3f} Mpps (runs {s['fwd_mpps']}), offered {s['offered_mpps_median']:.3f} Mpps")
print(f"ratio isopath/testpmd = {ratio:.3f}")
if sys.argv[2]:
    json.dump(summary, open(sys.argv[2], "w"), indent=2)
PY
