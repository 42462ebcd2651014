// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * isopath's XDP program: the first hop of the frame path.
 *
 * Every frame that arrives on a queue with a bound AF_XDP socket is redirected into that socket
 * through the XSKMAP (key = RX queue index). A frame on a queue without a socket is counted
 * (STAT_RX_DROP_NO_SOCKET) and dropped here: it is never handed silently to the kernel stack,
 * whose traffic on the datapath's ports would be a second, uncounted path.
 *
 * The program's name ("isopath_xdp") is how the loader recognises a program of ours left on an
 * interface by a crashed instance, as opposed to a foreign one.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Must match datapath/src/xsk/xdp.rs MAX_QUEUES. */
#define MAX_QUEUES 64

enum isopath_stat {
	STAT_RX_REDIRECT = 0,
	STAT_RX_DROP_NO_SOCKET = 1,
	STAT_MAX = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += 1;
}

SEC("xdp")
int isopath_xdp(struct xdp_md *ctx)
{
	/* One helper call: with XDP_DROP as the miss action, bpf_redirect_map() returns
	 * XDP_REDIRECT when the queue has a socket and XDP_DROP when it has none. A separate
	 * lookup first costs the sender's core on veth (XDP runs there) about 6% of its rate. */
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);

	count(action == XDP_REDIRECT ? STAT_RX_REDIRECT : STAT_RX_DROP_NO_SOCKET);
	return action;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
