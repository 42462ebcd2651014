#!/usr/bin/env bash
# Installs what isopath's build, demo, tests and CI need beyond what a fresh machine of the
# project's kind has (the base image: the library's env/packages/installed-rust.txt, copied as
# tests/fixtures/installed-rust.txt), and only what is missing. Sourced by demo.sh and test.sh;
# safe to run again. Installing needs root (apt-get); these machines have no sudo.
#
#   scripts/deps.sh                  install the build/test packages and tools
#   scripts/deps.sh --peers          also the benchmark peers (dpdk-testpmd, dpdk-test) and perf
#   scripts/deps.sh --list [--peers] print the Debian packages guaranteed, sorted (no root needed)
#
# This file is the one list: `tests/tests/deps.rs` checks that every external program the project
# runs resolves to a package named here or in the base image.
set -euo pipefail

# Debian packages: package, then a file that proves it is installed. The comment says who needs it.
ISOPATH_PKGS=(
    "m4:/usr/bin/m4"                     # libxdp-sys runs xdp-tools' configure, which needs m4
    "clang:/usr/bin/clang"               # compiles the XDP program (libbpf-cargo) and libxdp's BPF
    "llvm:/usr/bin/llvm-strip"           # libxdp's build strips its BPF objects
    "libelf-dev:/usr/include/libelf.h"   # libbpf, libxdp (built by libbpf-sys / xsk-rs)
    "zlib1g-dev:/usr/include/zlib.h"     # libbpf
    "libbpf-dev:/usr/include/bpf/bpf_helpers.h"  # bpf_helpers.h for the XDP program
    "linux-libc-dev:/usr/include/linux/bpf.h"    # UAPI headers for the XDP program
    "pkg-config:/usr/bin/pkg-config"     # libbpf-sys/libxdp-sys find libelf and zlib
    "make:/usr/bin/make"                 # libbpf-sys and libxdp-sys build with make
    "iproute2:/usr/sbin/ip"              # the veth lab (ip netns, ip link)
    "ethtool:/usr/sbin/ethtool"          # lab: checksum offload off on the host veths
    "iputils-ping:/usr/bin/ping"         # demo and tests: ping, ping -6 through the datapath
    "bpftool:/usr/sbin/bpftool"          # tests: no XDP program left behind
    "tcpdump:/usr/bin/tcpdump"           # captures read back with tcpdump -r; far-side captures
    "util-linux:/usr/bin/setpriv"        # taskset, and setpriv for the least-privilege tests
    "nftables:/usr/sbin/nft"             # sinks and induced loss in the lab
    "conntrack:/usr/sbin/conntrack"      # bench dump: conntrack -L, the kernel peer to beat
    "systemd:/usr/bin/systemd-analyze"   # service tests: `systemd-analyze verify` of the unit
    "passwd:/usr/sbin/useradd"           # service tests: install.sh adds its user (useradd --prefix)
    "procps:/usr/bin/pgrep"              # tests: kill, ps, pgrep
    "libhwloc-dev:/usr/include/hwloc.h"  # hwlocality (control): the machine's topology for worker placement
    "libudev-dev:/usr/include/libudev.h" # hwlocality links hwloc, which links libudev
    "tshark:/usr/bin/tshark"             # tests: the mixed-traffic pcap fixture is read by tshark too, and both readings must agree
    "nfdump:/usr/bin/nfcapd"             # tests: IPFIX export is read back by a real collector (nfcapd) and nfdump -r
    "prometheus:/usr/bin/promtool"       # tests: a real Prometheus scrapes the metrics endpoint; promtool checks the page
    "curl:/usr/bin/curl"                 # tests: fetch the metrics page and query Prometheus's HTTP API inside a lab namespace
)
# Only for the side-by-side measurement against DPDK (bench), not for tests.
ISOPATH_PEER_PKGS=(
    "dpdk-dev:/usr/bin/dpdk-testpmd"     # dpdk-testpmd: the forwarding peer
    "dpdk-dev:/usr/bin/dpdk-test"        # dpdk-test: rte_hash_perf_autotest beside the flow table (same package)
    "librte-net-af-xdp23:/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_af_xdp.so.23"
    "linux-perf:/usr/bin/perf"           # bench/scripts/redirect-profile.sh: perf record -e cpu-clock
)

# Cargo subcommands, installed with `cargo install --locked` when missing: name, then the
# binary that proves it is installed. Not Debian packages: deps.sh --list leaves them out.
ISOPATH_CARGO_TOOLS=(
    "cargo-fuzz:cargo-fuzz"              # test.sh runs the parser fuzz target for 60 s on nightly
)

isopath_pkg_names() {
    local entry
    for entry in "$@"; do printf '%s\n' "${entry%%:*}"; done
}

isopath_install() {
    local want=() entry pkg file
    for entry in "$@"; do
        pkg=${entry%%:*}
        file=${entry#*:}
        [ -e "$file" ] || want+=("$pkg")
    done
    if [ ${#want[@]} -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: missing packages ${want[*]}; run as root to install them" >&2
        return 1
    fi
    echo "deps: installing ${want[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # wireshark-common (tshark's) asks whether non-root users may capture: no.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections 2>/dev/null || true
    if ! apt-get update -q >/dev/null || ! apt-get install -y -q --no-install-recommends "${want[@]}" \
        > /tmp/isopath-deps-apt.log 2>&1; then
        cat /tmp/isopath-deps-apt.log >&2 || true
        echo "deps: apt-get failed for ${want[*]}" >&2
        return 1
    fi
}

isopath_deps() {
    isopath_install "${ISOPATH_PKGS[@]}"
    if ! command -v cargo >/dev/null 2>&1; then
        # The Rust toolchain comes with this kind of machine (rustup in ~/.cargo).
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "deps: cargo not found; install the Rust toolchain named in rust-toolchain.toml" >&2
            return 1
        fi
    fi
    isopath_cargo_tools
}

isopath_cargo_tools() {
    local entry tool bin
    for entry in "${ISOPATH_CARGO_TOOLS[@]}"; do
        tool=${entry%%:*}
        bin=${entry#*:}
        command -v "$bin" >/dev/null 2>&1 && continue
        echo "deps: cargo install --locked $tool" >&2
        if ! cargo install --locked "$tool" >/tmp/isopath-deps-cargo.log 2>&1; then
            cat /tmp/isopath-deps-cargo.log >&2 || true
            echo "deps: cargo install $tool failed" >&2
            return 1
        fi
    done
}

isopath_peer_deps() {
    isopath_install "${ISOPATH_PEER_PKGS[@]}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    list=0 peers=0
    for arg in "$@"; do
        case $arg in
            --list) list=1 ;;
            --peers) peers=1 ;;
            *) echo "usage: scripts/deps.sh [--peers] [--list]" >&2; exit 2 ;;
        esac
    done
    if [ $list -eq 1 ]; then
        {
            isopath_pkg_names "${ISOPATH_PKGS[@]}"
            [ $peers -eq 1 ] && isopath_pkg_names "${ISOPATH_PEER_PKGS[@]}"
        } | LC_ALL=C sort -u
        exit 0
    fi
    isopath_deps
    [ $peers -eq 1 ] && isopath_peer_deps
    echo "deps: ok" >&2
fi
