#!/usr/bin/env bash
# The flow table's index against DPDK's rte_hash on the same experiment: DPDK's own
# hash_perf_autotest (dpdk-test from dpdk-dev, installed by `scripts/deps.sh --peers`) and the
# flow table's `hash_perf` bench (2^19 entries at 75 % fill, random lookups of present keys,
# single and bulk of 16, hash computed in the lookup, TSC cycles per lookup), both pinned to
# core 1, alternated ROUNDS times (default 3); the median of each is compared.
#
# The DPDK table compared with: "Without locks in the code" / "ELEMENTS IN PRIMARY OR
# SECONDARY LOCATION" / "Operations with 8-byte data" / "Without pre-computed hash values",
# columns Lookup and Lookup_bulk, key sizes 13 (IPv4 5-tuple) and 37 (IPv6 5-tuple).
#
#   bench/scripts/hash-vs-rte.sh [ROUNDS=3]     (about 3.5 minutes a round)
# Prints one JSON line per case:
#   {"key_bytes":13,"mode":"single","rte_cycles":..,"isopath_cycles":..,"ratio":..}
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/deps.sh
isopath_deps
isopath_peer_deps

ROUNDS=${1:-3}
WORK=$(mktemp -d /tmp/isopath-hash.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo bench -q -p isopath-datapath --bench hash_perf --no-run >/dev/null 2>&1
BIN=$(ls -t target/release/deps/hash_perf-* | grep -v '\.d$' | head -1)

# DPDK's table above as "KEY MODE CYCLES" lines.
rte_table() {
    awk '
        /^Without locks in the code/ { locks = 0 }
        /^With locks in the code/ { locks = 1 }
        /ALL ELEMENTS IN PRIMARY LOCATION/ { loc = "primary" }
        /ELEMENTS IN PRIMARY OR SECONDARY LOCATION/ { loc = "both" }
        /Operations without data/ { data = 0 }
        /Operations with 8-byte data/ { data = 1 }
        /^Without pre-computed hash values/ { pre = 0 }
        /^With pre-computed hash values/ { pre = 1 }
        $1 ~ /^[0-9]+$/ && NF >= 5 && !locks && loc == "both" && data && !pre \
            && ($1 == 13 || $1 == 37) && !seen[$1]++ {
            print $1, "single", $3; print $1, "bulk16", $4
        }' "$1"
}

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS: rte_hash (hash_perf_autotest)" >&2
    echo hash_perf_autotest | dpdk-test --no-huge -m 1024 --no-pci -l 1 \
        --file-prefix "isohash$$" >"$WORK/rte.$r" 2>&1 || true
    rte_table "$WORK/rte.$r" >"$WORK/rte.$r.tab"
    [ "$(wc -l <"$WORK/rte.$r.tab")" -eq 4 ] || { echo "no table in dpdk-test output:" >&2; tail -20 "$WORK/rte.$r" >&2; exit 1; }
    echo "round $r/$ROUNDS: isopath flow table" >&2
    taskset -c 1 "$BIN" --bench >"$WORK/iso.$r"
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rte, iso = {}, {}
for r in range(1, rounds + 1):
    for line in open(f"{work}/rte.{r}.tab"):
        k, m, c = line.split()
        rte.setdefault((int(k), m), []).append(float(c))
    for line in open(f"{work}/iso.{r}"):
        d = json.loads(line)
        iso.setdefault((d["key_bytes"], d["mode"]), []).append(d["isopath_cycles"])
for k in (13, 37):
    for m in ("single", "bulk16"):
        a, b = statistics.median(rte[(k, m)]), statistics.median(iso[(k, m)])
        print(json.dumps({"key_bytes": k, "mode": m, "rte_cycles": a,
                          "isopath_cycles": round(b, 1), "ratio": round(b / a, 3)}))
PY
