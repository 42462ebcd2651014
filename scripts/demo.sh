#!/usr/bin/env bash
# isopath lab demo: builds, creates a veth lab in three network namespaces, runs isopathd on it,
# sends real traffic through the datapath (ping, a verified TCP transfer, a timed UDP stream
# both ways) while showing live per-port rates, checks the counts end to end, stops the daemon,
# then runs carrier-loss failovers on a bonded lab (isopath-bench failover). Tears every lab down.
# Ends by itself; exits non-zero on any failure.
#
#   (as root) scripts/demo.sh            # ISOPATH_DEMO_SECS=10 ISOPATH_DEMO_PPS=100000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

SECS=${ISOPATH_DEMO_SECS:-10}
PPS=${ISOPATH_DEMO_PPS:-100000}
PREFIX="demo$(( $$ % 100000 ))"
WORK=$(mktemp -d /tmp/isopath-demo.XXXXXX)
SOCK="/run/isopath/demo-$PREFIX.sock"
BIN="$PWD/target/release"
DAEMON_PID=
PIDS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*" 2>/dev/null || printf '\n== %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }

cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    deploy/lab.sh down "$PREFIX" >/dev/null 2>&1 || true
    deploy/lab.sh down "fo$(( $$ % 100000 ))" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    [ $rc -eq 0 ] && echo "demo: ok" || echo "demo: failed (exit $rc)" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || fail "run as root: the lab needs network namespaces, veth and AF_XDP"
isopath_deps

say "build (release)"
# Quiet on success; on failure the build's own errors are shown, not only its last line.
if ! cargo build --release --locked --workspace --bins > "$WORK/build.log" 2>&1; then
    grep -E -A12 '^(error|warning: build failed)' "$WORK/build.log" | head -200 >&2 || true
    echo "demo: full build log: last 60 lines" >&2
    tail -n 60 "$WORK/build.log" >&2
    fail "build"
fi
tail -n 1 "$WORK/build.log"

# One lab at a time on this machine (the tests, soak runs and benchmarks take the same lock): the
# demo pins its worker and sources to the two cores, so another lab running beside it would skew it.
exec 9> "${ISOPATH_LAB_LOCK:-/tmp/isopath-lab.lock}"
if ! flock -n 9; then
    echo "demo: another lab holds ${ISOPATH_LAB_LOCK:-/tmp/isopath-lab.lock}; waiting for it"
    flock 9
fi

say "lab $PREFIX: traffic ns t0 ── up0 [isopath] m0 ── s0/br0 far ns (m1 ── s1 spare)"
deploy/lab.sh up "$PREFIX"
eval "$(deploy/lab.sh env "$PREFIX")"

cat > "$WORK/isopath.toml" <<TOML
[daemon]
control_socket = "$SOCK"
[workers]
cores = [1]        # the traffic below runs on core 0
[[port]]
name = "up0"
[[port]]
name = "m0"
[[cross_connect]]
a = "up0"
b = "m0"
TOML

say "isopathd on up0 <-> m0 (worker pinned to core 1)"
ip netns exec "$LAB_NS_APP" "$BIN/isopathd" -c "$WORK/isopath.toml" 2> "$WORK/isopathd.log" &
DAEMON_PID=$!
for _ in $(seq 150); do
    grep -q ' ready ' "$WORK/isopathd.log" && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/isopathd.log"; fail "isopathd exited"; }
    sleep 0.1
done
grep -q ' ready ' "$WORK/isopathd.log" || { cat "$WORK/isopathd.log"; fail "isopathd not ready"; }
sed 's/^/  isopathd: /' "$WORK/isopathd.log"

say "ping $LAB_FAR_IP through the datapath"
ip netns exec "$LAB_NS_TRAFFIC" ping -c 3 -i 0.2 -W 2 "$LAB_FAR_IP" || fail "ping"
ip netns exec "$LAB_NS_FAR" ping -6 -c 2 -i 0.2 -W 2 "$LAB_TRAFFIC_IP6" || fail "ping -6"

say "TCP: 100 MB from traffic to far, verified byte by byte"
ip netns exec "$LAB_NS_FAR" "$BIN/isopath-bench" tcp-recv --bind "$LAB_FAR_IP:9001" \
    --timeout-secs 30 > "$WORK/tcp.json" 2> "$WORK/tcp.err" &
TCP_PID=$!; PIDS+=("$TCP_PID")
for _ in $(seq 50); do grep -q ready "$WORK/tcp.err" && break; sleep 0.1; done
ip netns exec "$LAB_NS_TRAFFIC" "$BIN/isopath-bench" tcp-send --dst "$LAB_FAR_IP:9001" --bytes 100000000
wait "$TCP_PID" || true
cat "$WORK/tcp.json"
grep -q '"ok":true' "$WORK/tcp.json" || fail "TCP transfer not verified"

N=$(( PPS * SECS ))
say "UDP: $SECS s at $PPS pps each way (64-byte frames), live rates"
"$BIN/isopath" -s "$SOCK" status --json > "$WORK/status-before-udp.json"
for dir in fwd rev; do
    if [ $dir = fwd ]; then rns=$LAB_NS_FAR; dst=$LAB_FAR_IP; else rns=$LAB_NS_TRAFFIC; dst=$LAB_TRAFFIC_IP; fi
    ip netns exec "$rns" taskset -c 0 "$BIN/isopath-bench" udp-recv --bind "$dst:9000" --expect "$N" \
        --timeout-secs $(( SECS + 5 )) > "$WORK/udp-$dir.json" 2> "$WORK/udp-$dir.err" &
    PIDS+=("$!")
done
sleep 0.5
ip netns exec "$LAB_NS_TRAFFIC" taskset -c 0 "$BIN/isopath-bench" udp-send --dst "$LAB_FAR_IP:9000" \
    --size 18 --count "$N" --rate "$PPS" > "$WORK/send-fwd.json" &
PIDS+=("$!")
ip netns exec "$LAB_NS_FAR" taskset -c 0 "$BIN/isopath-bench" udp-send --dst "$LAB_TRAFFIC_IP:9000" \
    --size 18 --count "$N" --rate "$PPS" > "$WORK/send-rev.json" &
PIDS+=("$!")
"$BIN/isopath" -s "$SOCK" rates --interval-ms 1000 --count "$SECS"
sleep 2
for dir in fwd rev; do
    for _ in $(seq 100); do [ -s "$WORK/udp-$dir.json" ] && break; sleep 0.1; done
    echo "  $dir: sent $(cat "$WORK/send-$dir.json")"
    echo "  $dir: got  $(cat "$WORK/udp-$dir.json")"
done

say "status"
"$BIN/isopath" -s "$SOCK" status | tee "$WORK/status.txt"
"$BIN/isopath" -s "$SOCK" status --json > "$WORK/status.json"

say "checks"
python3 - "$WORK" "$N" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
st = json.load(open(f"{work}/status.json"))
before = {p["name"]: p for p in json.load(open(f"{work}/status-before-udp.json"))["ports"]}
ok = True
def check(cond, what):
    global ok
    print(("  ok   " if cond else "  FAIL ") + what)
    ok &= cond
ports = {p["name"]: p for p in st["ports"]}
for name, p in ports.items():
    drops = {k: v for k, v in p["drops"].items() if v}
    check(not drops, f"{name}: no drops ({drops or 'none'})")
    check(p["xdp"]["rx_redirect"] == p["rx_packets"] + p["xsk"]["rx_dropped"],
          f"{name}: XDP redirects {p['xdp']['rx_redirect']} = worker rx {p['rx_packets']} + kernel rx_dropped {p['xsk']['rx_dropped']}")
check(ports["up0"]["rx_packets"] == ports["m0"]["tx_packets"], "every frame in on up0 went out on m0")
check(ports["m0"]["rx_packets"] == ports["up0"]["tx_packets"], "every frame in on m0 went out on up0")
for d in ("fwd", "rev"):
    r = json.load(open(f"{work}/udp-{d}.json"))
    check(r["corrupt"] == 0 and r["duplicates"] == 0, f"UDP {d}: no corrupt or duplicate datagram")
    # Where every datagram went: received; dropped by the receiving host's kernel (its socket
    # shares core 0 with two senders: UDP InErrors); or dropped by the kernel in front of the
    # datapath's ingress AF_XDP socket (XDP_STATISTICS rx_dropped: its fill ring ran empty,
    # i.e. the worker was off its core, which happens when the machine is busy and isolcpus is
    # not set). The UDP phase's frames on the ingress port are the datagrams plus a few ARP.
    ingress = "up0" if d == "fwd" else "m0"
    xsk_drop = ports[ingress]["xsk"]["rx_dropped"] - before[ingress]["xsk"]["rx_dropped"]
    total = r["received"] + r["kernel_drops"] + xsk_drop
    check(n <= total <= n + 20,
          f"UDP {d}: {r['received']} received + {r['kernel_drops']} dropped by the receiving kernel"
          f" + {xsk_drop} dropped at {ingress}'s AF_XDP socket = {total}, {n} sent")
    if xsk_drop:
        print(f"  info {ingress}: {xsk_drop} frames found its fill ring empty: the worker was off"
              f" core 1 (a busy machine; see deploy/README.md on isolcpus)")
for w in st["workers"]:
    f = w["frames"]
    check(f["free"] + f["in_fill"] + f["in_tx"] == f["total"], f"worker core {w['core']}: frames add up ({f})")
sys.exit(0 if ok else 1)
PY

say "stop (SIGTERM): drain, frame audit, detach"
kill -TERM "$DAEMON_PID"
set +e; wait "$DAEMON_PID"; code=$?; set -e
DAEMON_PID=
tail -n 5 "$WORK/isopathd.log" | sed 's/^/  isopathd: /'
[ "$code" -eq 0 ] || fail "isopathd exit code $code"
grep -q 'unaccounted=0' "$WORK/isopathd.log" || fail "frame audit"
if ip -n "$LAB_NS_APP" -d link show up0 | grep -q 'prog/xdp'; then fail "XDP program left on up0"; fi
echo "  no XDP program left on up0/m0"

FO_RUNS=${ISOPATH_DEMO_FAILOVERS:-6}
say "failover: up0 <-> bond0 {m0, m1}; $FO_RUNS carrier-loss failovers at 50 kpps (pull the active member's far end)"
"$BIN/isopath-bench" failover --rates 50k --runs "$FO_RUNS" --prefix "fo$(( $$ % 100000 ))" -q \
    --out "$WORK/failover" > "$WORK/failover.out" 2>&1 \
    || { cat "$WORK/failover.out"; fail "failover run"; }
python3 - "$WORK/failover/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["failover_series"][0]
ok = s["failovers"] == s["bond_failovers"]
ms = lambda v, sign="": "-" if v is None else f"{v:{sign}.3f} ms"
for f in r["failover"]:
    print(f"  {f['name']}: detection {ms(f['detection_ms'], '+')}, resume {ms(f['resume_ms'])}, "
          f"gap {ms(f['outage_ms'])}, lost {f['lost']}")
    ok = ok and f["detection_ms"] is not None and f["resume_ms"] is not None and f["resume_ms"] < 50
print(f"  every frame numbered: sent {s['sent']}, received {s['received']}, lost {s['lost']} "
      f"({s['background_lost']} outside the failovers), duplicates {s['duplicates']}, reordered {s['reordered']}")
sys.exit(0 if ok else 1)
PY
