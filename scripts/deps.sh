#!/usr/bin/env bash
# Installs what isopath's build, lab and tests need, only what is missing. Sourced by demo.sh and
# test.sh; safe to run again. Needs root (apt-get) on a Debian 12 machine of the project's kind.
set -euo pipefail

# Debian packages: package name, then a file that proves it is installed.
ISOPATH_PKGS=(
    "clang:/usr/bin/clang"               # compiles the XDP program (libbpf-cargo)
    "llvm:/usr/bin/llvm-strip"
    "libelf-dev:/usr/include/libelf.h"   # libbpf, libxdp (built by libbpf-sys / xsk-rs)
    "zlib1g-dev:/usr/include/zlib.h"
    "libbpf-dev:/usr/include/bpf/bpf_helpers.h"  # bpf_helpers.h for the XDP program
    "linux-libc-dev:/usr/include/linux/bpf.h"
    "pkg-config:/usr/bin/pkg-config"
    "make:/usr/bin/make"
    "iproute2:/usr/sbin/ip"              # the veth lab
    "ethtool:/usr/sbin/ethtool"
    "iputils-ping:/usr/bin/ping"
    "bpftool:/usr/sbin/bpftool"
    "tcpdump:/usr/bin/tcpdump"
    "util-linux:/usr/bin/setpriv"        # taskset, and setpriv for the least-privilege tests
    "nftables:/usr/sbin/nft"             # sinks and induced loss in the lab
    "systemd:/usr/bin/systemd-analyze"   # service tests: `systemd-analyze verify` of the unit
    "passwd:/usr/sbin/useradd"           # service tests: install.sh adds its user (useradd --prefix)
)
# Only for the side-by-side measurement against dpdk-testpmd (bench), not for tests.
ISOPATH_PEER_PKGS=(
    "dpdk-dev:/usr/bin/dpdk-testpmd"
    "librte-net-af-xdp23:/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_af_xdp.so.23"
)

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
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
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
}

isopath_peer_deps() {
    isopath_install "${ISOPATH_PEER_PKGS[@]}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    isopath_deps
    [ "${1:-}" = "--peers" ] && isopath_peer_deps
    echo "deps: ok" >&2
fi
