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
	__u32 queue = ctx->rx_queue_index;

	if (bpf_map_lookup_elem(&xsks, &queue)) {
		count(STAT_RX_REDIRECT);
		/* A socket that goes away between the lookup and the redirect makes this XDP_DROP:
		 * the kernel counts that one in the socket's own statistics. */
		return bpf_redirect_map(&xsks, queue, XDP_DROP);
	}
	count(STAT_RX_DROP_NO_SOCKET);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
