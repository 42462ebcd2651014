#!/usr/bin/env bash
# isopath veth lab: three network namespaces joined by 2-queue veth pairs.
#
#   ns PREFIX-traffic: t0 ──veth── up0 ┐ ns PREFIX-app (isopath)  ┌ m0 ──veth── s0 ┐ ns PREFIX-far: bridge br0
#                                      └──────── (datapath) ──────┤                 ├─ (MAC learning, address on br0)
#                                                                 └ m1 ──veth── s1 ┘
#
# Usage:
#   deploy/lab.sh up PREFIX       build the lab (an existing lab of that PREFIX is torn down first)
#   deploy/lab.sh down PREFIX     delete the lab's namespaces (a missing lab is a no-op success)
#   deploy/lab.sh status PREFIX   describe the lab; exit 0 complete, 1 partial, 3 absent
#   deploy/lab.sh env PREFIX      print KEY=value lines describing the lab (safe to eval)
#
# PREFIX is 1 to 10 characters of [a-z0-9]. Every veth is created directly inside the lab's
# namespaces (never in the root namespace) with 2 TX and 2 RX queues. Nothing outside the three
# namespaces is created or changed, and no process is started or killed.
#
# The appliance namespace (PREFIX-app) holds up0, m0 and m1 for the datapath: IPv6 is disabled
# there before any link comes up, the three links have ARP and multicast off and no addresses,
# so its kernel never transmits on them. Without a forwarder running in PREFIX-app, t0 and br0
# cannot reach each other: the appliance is an L2 wire that needs the datapath.
set -euo pipefail

readonly TRAFFIC_IP4=198.18.0.1
readonly FAR_IP4=198.18.0.2
readonly PLEN4=24
readonly TRAFFIC_IP6=2001:2::1
readonly FAR_IP6=2001:2::2
readonly PLEN6=64

readonly MAC_T0=02:00:00:00:00:01
readonly MAC_UP0=02:00:00:00:01:00
readonly MAC_M0=02:00:00:00:01:01
readonly MAC_M1=02:00:00:00:01:02
readonly MAC_S0=02:00:00:00:02:00
readonly MAC_S1=02:00:00:00:02:01
readonly MAC_BR0=02:00:00:00:00:02

readonly QUEUES=2

usage() {
    cat >&2 <<'EOF'
usage: lab.sh up|down|status|env PREFIX
  PREFIX: 1 to 10 characters of [a-z0-9]
  up      build the lab (tearing down an existing one of that PREFIX first)
  down    delete the lab (no-op if absent)
  status  describe the lab; exit 0 complete, 1 partial, 3 absent
  env     print KEY=value lines describing the lab
EOF
}

die() {
    echo "lab.sh: error: $*" >&2
    exit 2
}

validate_prefix() {
    local prefix=$1
    if [[ ! $prefix =~ ^[a-z0-9]{1,10}$ ]]; then
        die "invalid PREFIX '$prefix': must be 1 to 10 characters of [a-z0-9]"
    fi
}

ns_exists() {
    [[ -e /run/netns/$1 ]]
}

# Runs sysctl -w for each KEY=VALUE argument inside namespace $1.
ns_sysctl() {
    local ns=$1
    shift
    ip netns exec "$ns" sysctl -q -w "$@" >/dev/null
}

# veth pair with QUEUES TX and RX queues on both ends, created inside $1 with the peer placed
# directly in $4: no end ever exists in the root namespace. Both ends start down.
make_veth() {
    local ns_a=$1 if_a=$2 mac_a=$3 ns_b=$4 if_b=$5 mac_b=$6
    ip -n "$ns_a" link add "$if_a" address "$mac_a" \
        numtxqueues "$QUEUES" numrxqueues "$QUEUES" \
        type veth peer name "$if_b" address "$mac_b" \
        numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$ns_b"
}

cmd_down() {
    local prefix=$1 ns pids
    for ns in "$prefix-traffic" "$prefix-app" "$prefix-far"; do
        if ns_exists "$ns"; then
            pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
            if [[ -n ${pids// /} ]]; then
                echo "lab.sh: warning: processes still in $ns (not killed; its links live until they exit): $pids" >&2
            fi
            ip netns del "$ns"
        fi
    done
}

UP_PREFIX=

# EXIT trap while `up` runs: a lab left half-built is removed.
up_exit() {
    local rc=$?
    if [[ -n $UP_PREFIX ]]; then
        echo "lab.sh: up failed (exit $rc): removing lab '$UP_PREFIX'" >&2
        cmd_down "$UP_PREFIX" || true
    fi
    exit "$rc"
}

cmd_up() {
    local prefix=$1
    local ns_t="$prefix-traffic" ns_a="$prefix-app" ns_f="$prefix-far"

    if ns_exists "$ns_t" || ns_exists "$ns_a" || ns_exists "$ns_f"; then
        echo "lab.sh: lab '$prefix' exists: tearing it down first" >&2
        cmd_down "$prefix"
    fi

    # Any failure (or signal) from here on removes whatever was built.
    UP_PREFIX=$prefix
    trap up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ip netns add "$ns_t"
    ip netns add "$ns_a"
    ip netns add "$ns_f"

    local ns
    for ns in "$ns_t" "$ns_a" "$ns_f"; do
        # No gratuitous ARP on link changes.
        ns_sysctl "$ns" net.ipv4.conf.all.arp_notify=0 net.ipv4.conf.default.arp_notify=0
    done

    # Appliance: IPv6 off before any device exists or comes up, so devices created here
    # (including veth peers created from another namespace) inherit it.
    ns_sysctl "$ns_a" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1

    # Traffic and far ends: no router solicitations, no RA, no DAD probes.
    for ns in "$ns_t" "$ns_f"; do
        ns_sysctl "$ns" \
            net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0 \
            net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
            net.ipv6.conf.all.dad_transmits=0 net.ipv6.conf.default.dad_transmits=0
    done

    make_veth "$ns_t" t0 "$MAC_T0" "$ns_a" up0 "$MAC_UP0"
    make_veth "$ns_a" m0 "$MAC_M0" "$ns_f" s0 "$MAC_S0"
    make_veth "$ns_a" m1 "$MAC_M1" "$ns_f" s1 "$MAC_S1"

    # Appliance links: IPv6 off per device, no ARP, no multicast, no addresses; then up.
    local dev
    for dev in up0 m0 m1; do
        ns_sysctl "$ns_a" "net.ipv6.conf.$dev.disable_ipv6=1"
        ip -n "$ns_a" link set dev "$dev" arp off multicast off
    done
    ip -n "$ns_a" link set dev lo up
    for dev in up0 m0 m1; do
        ip -n "$ns_a" link set dev "$dev" up
    done

    # Far end: a learning bridge (STP off, default ageing) over s0 and s1; IPv6 only on br0.
    # Multicast snooping off: with it on, the bridge joins the all-snoopers groups (224.0.0.106,
    # ff02::6a) and repeats their IGMP/MLD reports at random moments for a second or two after it
    # comes up, and those reports are flooded to both members: unsolicited frames on a quiet lab.
    ip -n "$ns_f" link add br0 address "$MAC_BR0" type bridge stp_state 0 mcast_snooping 0
    for dev in s0 s1; do
        ns_sysctl "$ns_f" "net.ipv6.conf.$dev.disable_ipv6=1"
        ip -n "$ns_f" link set dev "$dev" master br0
    done
    ns_sysctl "$ns_f" net.ipv6.conf.br0.disable_ipv6=0
    ip -n "$ns_f" addr add "$FAR_IP4/$PLEN4" dev br0
    ip -n "$ns_f" addr add "$FAR_IP6/$PLEN6" dev br0 nodad
    ip -n "$ns_f" link set dev lo up
    ip -n "$ns_f" link set dev s0 up
    ip -n "$ns_f" link set dev s1 up
    ip -n "$ns_f" link set dev br0 up

    # The hosts' veths must put complete checksums and real-sized frames on the "wire": by
    # default veth leaves checksums to hardware (CHECKSUM_PARTIAL) and hands large GSO packets
    # over, which only works because the peer is a kernel socket. The datapath forwards frames
    # through AF_XDP like a NIC does, so a half-done checksum would arrive at the far stack as
    # corrupt (UDP and TCP dropped, ICMP fine). On a real 82599 the sender's NIC finishes them.
    ip netns exec "$ns_t" ethtool -K t0 tx off tso off gso off gro off >/dev/null
    for dev in br0 s0 s1; do
        ip netns exec "$ns_f" ethtool -K "$dev" tx off tso off gso off gro off >/dev/null 2>&1 || true
    done

    # Traffic end.
    ip -n "$ns_t" addr add "$TRAFFIC_IP4/$PLEN4" dev t0
    ip -n "$ns_t" addr add "$TRAFFIC_IP6/$PLEN6" dev t0 nodad
    ip -n "$ns_t" link set dev lo up
    ip -n "$ns_t" link set dev t0 up

    UP_PREFIX=
    trap - EXIT INT TERM
    echo "lab.sh: lab '$prefix' is up ($ns_t, $ns_a, $ns_f)" >&2
}

# Prints "ns dev present|missing state" lines; returns the number of missing items.
cmd_status() {
    local prefix=$1
    local ns_t="$prefix-traffic" ns_a="$prefix-app" ns_f="$prefix-far"
    local present=0 missing=0 ns dev state
    local -a expect=(
        "$ns_t:t0" "$ns_a:up0" "$ns_a:m0" "$ns_a:m1" "$ns_f:s0" "$ns_f:s1" "$ns_f:br0"
    )
    for ns in "$ns_t" "$ns_a" "$ns_f"; do
        if ns_exists "$ns"; then
            echo "netns $ns present"
            present=$((present + 1))
        else
            echo "netns $ns missing"
            missing=$((missing + 1))
        fi
    done
    local item
    for item in "${expect[@]}"; do
        ns=${item%%:*}
        dev=${item#*:}
        if ns_exists "$ns" && ip -n "$ns" link show dev "$dev" >/dev/null 2>&1; then
            state=$(ip -n "$ns" -o link show dev "$dev" | sed -n 's/.* state \([A-Z]*\) .*/\1/p')
            echo "link $ns/$dev present ${state:-UNKNOWN}"
            present=$((present + 1))
        else
            echo "link $ns/$dev missing"
            missing=$((missing + 1))
        fi
    done
    if ((missing == 0)); then
        echo "lab $prefix: up"
        return 0
    elif ((present == 0)); then
        echo "lab $prefix: absent"
        return 3
    else
        echo "lab $prefix: partial"
        return 1
    fi
}

cmd_env() {
    local prefix=$1
    cat <<EOF
LAB_PREFIX=$prefix
LAB_NS_TRAFFIC=$prefix-traffic
LAB_NS_APP=$prefix-app
LAB_NS_FAR=$prefix-far
LAB_TRAFFIC_IF=t0
LAB_APP_UPLINK_IF=up0
LAB_APP_MEMBER0_IF=m0
LAB_APP_MEMBER1_IF=m1
LAB_FAR_IF=br0
LAB_TRAFFIC_IP=$TRAFFIC_IP4
LAB_FAR_IP=$FAR_IP4
LAB_PREFIXLEN=$PLEN4
LAB_TRAFFIC_IP6=$TRAFFIC_IP6
LAB_FAR_IP6=$FAR_IP6
LAB_PREFIXLEN6=$PLEN6
LAB_TRAFFIC_MAC=$MAC_T0
LAB_UP0_MAC=$MAC_UP0
LAB_M0_MAC=$MAC_M0
LAB_M1_MAC=$MAC_M1
LAB_S0_MAC=$MAC_S0
LAB_S1_MAC=$MAC_S1
LAB_FAR_MAC=$MAC_BR0
LAB_QUEUES=$QUEUES
EOF
}

main() {
    if (($# != 2)); then
        usage
        exit 2
    fi
    local cmd=$1 prefix=$2
    validate_prefix "$prefix"
    case $cmd in
    up | down | status)
        if ((EUID != 0)); then
            die "'$cmd' needs root (network namespaces)"
        fi
        ;;
    esac
    case $cmd in
    up) cmd_up "$prefix" ;;
    down) cmd_down "$prefix" ;;
    status) cmd_status "$prefix" ;;
    env) cmd_env "$prefix" ;;
    *)
        usage
        die "unknown command '$cmd'"
        ;;
    esac
}

main "$@"
