#!/usr/bin/env bash
# Instructions per forwarded packet (callgrind), isopathd and the bare AF_XDP forwarder, on a
# veth lab of its own. This VM has no hardware counters; callgrind counts the instructions a
# process executes in user space (the kernel's share, the copy-mode TX in sendto, is not counted).
#
# usage (as root): bench/scripts/callgrind.sh [SECS] [RATE] [FLOWS]
#   SECS  seconds of traffic per measurement (default 3)
#   RATE  source rate, pps with k/M (default 0 = the live source's full speed)
#   FLOWS UDP 5-tuples the source spreads its frames over (default 1; isopath-bench gen --flows)
#   ISOPATH_BIN_DIR  where isopathd and isopath-bench are (default target/release)
#   ISOPATH_CALLGRIND_OUT  keep the traffic windows' dumps there (callgrind_annotate FILE)
#   ISOPATH_CALLGRIND_POLL, ISOPATH_CALLGRIND_RX  the measured functions' names, for binaries
#       of older builds (before the worker split: isopath_datapath::worker::Worker::poll_once
#       and isopath_datapath::xsk::XskUmem::rx_burst; before parsefast's xsk-fwd wrapper:
#       <isopath_datapath::xsk::ring::XskUmem as isopath_datapath::xsk::ring::Rings>::rx_burst)
#
# Method, per forwarder (isopathd: up0 <-> m0 cross-connect with flow tracking off, today's
# wire; isopathd-track: the same with tracking on, `[flows]` defaults; isopathd-bond: up0 <->
# bond0 over m0/m1, primary m0, tracking on; isopath-bench xsk-fwd):
#   1. start it under `valgrind --tool=callgrind --fair-sched=yes --dump-instr=no` in the lab's appliance
#      namespace, worker on core 1;
#   2. idle window: `callgrind_control -z`, 2 s without traffic, `callgrind_control -d`:
#      cost of one idle loop = inclusive Ir of the poll function / its loops;
#   3. traffic window: `-z`, the XDP live-frames source on t0 (core 0) for SECS, `-d` at once;
#      frames forwarded from the forwarder's own counters (isopathd: m0 tx_packets from its
#      status; xsk-fwd: its tx count), busy loops likewise (worker busy_loops; xsk-fwd
#      busy_polls);
#   4. instructions per packet = (inclusive Ir of the poll function in the traffic window
#      - idle loops in that window x idle cost) / frames forwarded. Idle loops are the
#      loops (isopathd: calls of Worker::poll_once; xsk-fwd: calls of its rx_poll, one
#      per queue poll, / its queues) minus the busy ones; a busy loop keeps its whole cost
#      (its polls of the idle sockets included). Under valgrind the forwarder's user space
#      runs tens of times slower, so an unpaced source fills every busy loop with a full burst
#      (64 frames); the idle loops' share of the window is printed.
# The poll function is isopathd's Worker::poll_once (everything the worker does per pass over
# its sockets) and xsk-fwd's whole loop (isopath_bench::xsk::bare, set-up excluded by the
# windows). Every process started here is stopped by its pid; the lab is removed on exit.
set -euo pipefail

SECS=${1:-3}
RATE=${2:-0}
FLOWS=${3:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${ISOPATH_BIN_DIR:-$ROOT/target/release}
PREFIX=cg$(($$ % 100000000))
WORK=$(mktemp -d /tmp/isopath-callgrind.XXXXXX)
SOCK=/run/isopath/callgrind-$PREFIX.sock
PIDS=()

for b in isopathd isopath-bench; do
    [[ -x $BIN/$b ]] || {
        echo "callgrind.sh: $BIN/$b missing (cargo build --release -p isopath-control -p isopath-bench)" >&2
        exit 2
    }
done
for t in valgrind callgrind_control python3 nft; do
    command -v "$t" >/dev/null || {
        echo "callgrind.sh: $t is not installed" >&2
        exit 2
    }
done
((EUID == 0)) || {
    echo "callgrind.sh: needs root (network namespaces, AF_XDP)" >&2
    exit 2
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -INT "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    "$ROOT/deploy/lab.sh" down "$PREFIX" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ROOT/deploy/lab.sh" up "$PREFIX" 2>/dev/null
ip netns exec "$PREFIX-far" nft add table netdev cgsink
ip netns exec "$PREFIX-far" nft add chain netdev cgsink in '{ type filter hook ingress device s0 priority 0; }'
ip netns exec "$PREFIX-far" nft add rule netdev cgsink in drop

# Starts "$@" under callgrind in the appliance namespace; sets VG (valgrind's pid) once the
# program printed $1 (a ready line) on stderr.
start_vg() {
    local ready=$1 name=$2
    shift 2
    # --fair-sched=yes: valgrind runs one thread at a time, and without a fair lock a worker
    # that spins without system calls can starve the daemon's control thread (status).
    ip netns exec "$PREFIX-app" timeout 600 valgrind --tool=callgrind --fair-sched=yes \
        --dump-instr=no --callgrind-out-file="$WORK/$name.out" "$@" \
        >"$WORK/$name.stdout" 2>"$WORK/$name.stderr" &
    for _ in $(seq 600); do
        VG=$(pgrep -f "^[^ ]*valgrind(\.bin)? --tool=callgrind --fair-sched=yes --dump-instr=no --callgrind-out-file=$WORK/$name.out" || true)
        if [[ -n $VG ]] && grep -q -- "$ready" "$WORK/$name.stderr"; then
            PIDS+=("$VG")
            return 0
        fi
        sleep 0.2
    done
    echo "callgrind.sh: $name did not become ready:" >&2
    tail -20 "$WORK/$name.stderr" >&2
    exit 1
}

# Stops the program under callgrind (SIGINT, SIGKILL after 60 s) and waits for it.
stop_vg() {
    kill -INT "$VG" 2>/dev/null || true
    for _ in $(seq 600); do
        kill -0 "$VG" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$VG" 2>/dev/null || true
    wait 2>/dev/null || true
    PIDS=()
}

# Zeroes the counters of the program under callgrind (pid $VG).
zero() {
    callgrind_control -z "$VG" >"$WORK/ctl.log" 2>&1 || { cat "$WORK/ctl.log" >&2; exit 1; }
    grep -q OK "$WORK/ctl.log" || { cat "$WORK/ctl.log" >&2; exit 1; }
}

# Dumps the counters of pid $VG (program $1) and prints the new dump file's name.
dump() {
    local n
    n=$(find "$WORK" -name "$1.out.*" | wc -l)
    callgrind_control -d "$VG" >"$WORK/ctl.log" 2>&1 || { cat "$WORK/ctl.log" >&2; exit 1; }
    for _ in $(seq 100); do
        if (($(find "$WORK" -name "$1.out.*" | wc -l) > n)); then
            sleep 0.2 # let callgrind finish writing it
            echo "$WORK/$1.out.$((n + 1))"
            return 0
        fi
        sleep 0.1
    done
    echo "callgrind.sh: no dump from $1:" >&2
    cat "$WORK/ctl.log" >&2
    exit 1
}

gen() {
    ip netns exec "$PREFIX-traffic" "$BIN/isopath-bench" gen --iface t0 --core 0 \
        --rate "$RATE" --flows "$FLOWS" --secs "$SECS" --dst-mac 02:00:00:00:00:02 2>/dev/null
}

status() {
    python3 - "$SOCK" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(60)
s.sendall(b"status\n")
d = b""
while not d.endswith(b"\n"):
    d += s.recv(1 << 16)
j = json.loads(d)
w = j["workers"][0]
m0 = next(p for p in j["ports"] if p["name"] == "m0")
up0 = next(p for p in j["ports"] if p["name"] == "up0")
print(w["busy_loops"], m0["tx_packets"], up0["xsk"]["rx_dropped"])
EOF
}

sum() { python3 "$HERE/callgrind-sum.py" "$@"; }

# Keeps a traffic window's dump in $ISOPATH_CALLGRIND_OUT (if set) for callgrind_annotate.
keep() {
    if [[ -n ${ISOPATH_CALLGRIND_OUT:-} ]]; then
        mkdir -p "$ISOPATH_CALLGRIND_OUT"
        cp "$1" "$ISOPATH_CALLGRIND_OUT/callgrind.$2.traffic.out"
    fi
}
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$2"; }

# Prints the figures of one forwarder: idle dump, traffic dump, counters.
report() {
    local name=$1 idle=$2 busy_dump=$3 busy=$4 packets=$5 dropped=$6
    python3 - "$name" "$idle" "$busy_dump" "$busy" "$packets" "$dropped" <<'EOF'
import sys
name, idle, traffic = sys.argv[1], sys.argv[2], sys.argv[3]
busy, packets, dropped = map(int, sys.argv[4:7])
f = lambda s: dict(kv.split("=") for kv in s.split())
i, t = f(idle), f(traffic)
ci = int(i["incl_ir"]) / max(1, int(i["calls"]))
polls = int(t["calls"])
idle_polls = max(0, polls - busy)
ir = int(t["incl_ir"])
net = ir - idle_polls * ci
print(f"{name}: {packets} frames forwarded ({dropped} dropped at the input ring), "
      f"{busy} busy loops of {polls} ({packets / max(1, busy):.1f} frames per busy loop)")
print(f"{name}:   idle loop {ci:.1f} Ir; traffic window {ir} Ir, idle loops' share "
      f"{100 * idle_polls * ci / max(1, ir):.1f}%")
print(f"{name}:   instructions per forwarded packet: {net / max(1, packets):.1f} "
      f"(all-in, idle loops included: {ir / max(1, packets):.1f})")
EOF
}

# isopathd $1 with the config body $2 (ports, bonds, cross-connects), worker on core 1; the
# frames leave on m0 (the plain cross-connect's output, the bond's primary member).
measure_isopathd() {
    local name=$1 body=$2 d idle traffic b0 p0 d0 b1 p1 d1
    printf '[daemon]\ncontrol_socket = "%s"\n[workers]\ncores = [1]\n%s' "$SOCK" "$body" \
        >"$WORK/$name.toml"
    start_vg " ready " "$name" "$BIN/isopathd" -c "$WORK/$name.toml" --force
    local poll=${ISOPATH_CALLGRIND_POLL:-'isopath_datapath::worker::poll::Worker<R>::poll_once'}
    zero
    sleep 2
    d=$(dump "$name")
    idle=$(sum "$d" "$poll")
    read -r b0 p0 d0 < <(status)
    zero
    gen >"$WORK/gen-$name.json"
    d=$(dump "$name")
    traffic=$(sum "$d" "$poll")
    keep "$d" "$name"
    sleep 0.5
    read -r b1 p1 d1 < <(status)
    report "$name" "$idle" "$traffic" $((b1 - b0)) $((p1 - p0)) $((d1 - d0))
    stop_vg
}

measure_isopathd isopathd '[[port]]
name = "up0"
[[port]]
name = "m0"
[[cross_connect]]
a = "up0"
b = "m0"
[flows]
enabled = false
'
measure_isopathd isopathd-track '[[port]]
name = "up0"
[[port]]
name = "m0"
[[cross_connect]]
a = "up0"
b = "m0"
'
# The bond path: up0 <-> bond0, active-backup over m0 and m1 (primary m0).
measure_isopathd isopathd-bond '[[port]]
name = "up0"
[[port]]
name = "m0"
[[port]]
name = "m1"
[[bond]]
name = "bond0"
members = ["m0", "m1"]
primary = "m0"
[[cross_connect]]
a = "up0"
b = "bond0"
'

# The bare AF_XDP forwarder (no processing), same path and cores.
start_vg ready xskfwd "$BIN/isopath-bench" xsk-fwd --iface up0 --to m0 --core 1 --secs 300
POLL='isopath_bench::xsk::bare'
RX=${ISOPATH_CALLGRIND_RX:-'isopath_bench::xsk::rx_poll'}
zero
sleep 2
D=$(dump xskfwd)
I=$(sum "$D" "$POLL" "$RX")
zero
gen >"$WORK/gen2.json"
D=$(dump xskfwd)
T=$(sum "$D" "$POLL" "$RX")
keep "$D" xsk-fwd
stop_vg
# Loops = queue polls / queues (xsk-fwd polls every queue of both ports per loop); busy loops =
# busy polls, since one source pinned to one core fills one RX queue only.
read -r Q BUSY TX DROP < <(python3 -c '
import json, sys
j = json.loads([l for l in sys.stdin.read().splitlines() if l.startswith("{")][-1])
print(sum(p["queues"] for p in j["ports"]), j["busy_polls"], j["tx"],
      sum(p["xsk"]["rx_dropped"] for p in j["ports"]))' <"$WORK/xskfwd.stdout")
IDLE="incl_ir=$(field incl_ir "$I") calls=$(($(field callee_calls "$I") / Q))"
TRAFFIC="incl_ir=$(field incl_ir "$T") calls=$(($(field callee_calls "$T") / Q))"
report xsk-fwd "$IDLE" "$TRAFFIC" "$BUSY" "$TX" "$DROP"
