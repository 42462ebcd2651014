// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * isopath-bench's XDP programs.
 *
 * bench_gen: the live-frames traffic source. User space runs it with BPF_PROG_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES (~2M frames per call) on a template frame; for every frame the
 * program stamps flow, per-flow sequence number and a TX timestamp (bpf_ktime_get_ns, the
 * CLOCK_MONOTONIC of the receiver) into the payload, sets the UDP source port of the flow,
 * updates the UDP checksum incrementally (RFC 1624) and returns XDP_TX, which the kernel turns
 * into a transmission on the device named by the context's ingress_ifindex. A token bucket
 * paces it: a frame over the rate is returned as XDP_DROP (cheap) instead, so the offered load
 * is smooth at the microsecond scale rather than bursty per call.
 *
 * In live-frames mode the kernel initialises each page from the template once and recycles it
 * without re-copying: a frame holds whatever the previous run stamped, so the checksum update
 * takes each rewritten word's old value from the frame itself.
 *
 * bench_drop: the lab's receive ceiling: count and drop.
 *
 * bench_redirect_map, bench_redirect: the xdp-redirect peer, an in-kernel L2 cross-connect:
 * every frame leaves on the interface in redir_out, through the one-entry devmap redir_port
 * (bpf_redirect_map, bulked per NAPI poll) or straight by ifindex (bpf_redirect). Nothing is
 * counted here: veth's own XDP counters (ethtool -S) say what was redirected and what the
 * output veth refused. bench_pass: XDP_PASS, which gives a veth the NAPI it needs to accept
 * redirected frames (shared/peers/README.md pitfall 6).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Must match bench/src/bpf.rs GenState. */
struct gen_state {
	__u64 rate_pps;    /* 0: unlimited */
	__u64 burst;       /* token bucket depth, frames */
	__u64 start_ns;    /* set by the first frame */
	__u64 issued;      /* token-bucket slots used (sent + forgiven idle) */
	__u64 sent;        /* frames returned as XDP_TX */
	__u64 paced;       /* frames returned as XDP_DROP by the token bucket */
	__u32 payload_off; /* offset of the 12-byte probe in the frame */
	__u32 csum_off;    /* offset of the UDP checksum */
	__u32 sport_off;   /* offset of the UDP source port */
	__u32 flows;       /* >= 1 */
	__u32 sport_base;  /* host order */
	__u32 stop;        /* user space sets it to end a run early */
	__u32 hdr_len;     /* bytes of hdr: headers and probe, even, <= HDR_MAX */
	__u32 dport_base;  /* host order */
	__u32 mirror;      /* non-zero: ports swapped (the way back of the same flows) */
	__u32 pad;
	__u8 hdr[80];      /* the template's first hdr_len bytes */
};

#define HDR_MAX 80

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_state);
} gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* The redirect's output ifindex (key 0), written by user space before attaching. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} redir_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} redir_port SEC(".maps");

static __always_inline __u16 bswap16(__u16 v)
{
	return (__u16)((v << 8) | (v >> 8));
}

SEC("xdp")
int bench_gen(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct gen_state *s = bpf_map_lookup_elem(&gen, &key);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 now = bpf_ktime_get_ns();

	if (!s || s->stop)
		return XDP_DROP;
	if (s->rate_pps) {
		__u64 allowed;

		if (!s->start_ns)
			s->start_ns = now;
		allowed = (now - s->start_ns) * s->rate_pps / 1000000000ULL;
		if (allowed > s->issued + s->burst)
			s->issued = allowed - s->burst;
		if (allowed <= s->issued) {
			s->paced++;
			return XDP_DROP;
		}
		s->issued++;
	}

	__u32 poff = s->payload_off & 0x7ff;
	__u32 coff = s->csum_off & 0x7ff;
	__u32 soff = s->sport_off & 0x7ff;
	__u32 flows = s->flows ? s->flows : 1;
	__u64 n = s->sent;
	__u32 flow = (__u32)(n % flows);
	__u32 seq = (__u32)(n / flows);
	__u32 ts = (__u32)now;
	__u16 *p = data + poff;
	__u16 *c = data + coff;
	__u16 *sp = data + soff;

	if ((void *)(p + 6) > data_end || (void *)(c + 1) > data_end || (void *)(sp + 2) > data_end)
		return XDP_DROP;

	/* Restore the headers and the probe from the template: a frame that went up a kernel
	 * stack (a forwarding peer decrements the TTL and rewrites MACs, VLAN untagging moves the
	 * MAC header) comes back to the page pool changed, and live-frames mode never re-copies
	 * the template into a recycled page. */
	__u16 *d16 = data;
	__u16 *h16 = (__u16 *)s->hdr;
	__u32 hwords = s->hdr_len / 2;
#pragma unroll
	for (int i = 0; i < HDR_MAX / 2; i++) {
		if (i >= hwords || (void *)(d16 + i + 1) > data_end)
			break;
		d16[i] = h16[i];
	}

	/* Probe: magic(2) flow(2) seq(4) ts(4), big-endian; the magic comes with the template.
	 * Recycled pages keep what the previous run wrote, so every rewritten word is updated
	 * incrementally from its old value (RFC 1624: HC' = ~(~HC + ~m + m')). */
	__u16 pa = (__u16)(s->sport_base + (flow & 4095));
	__u16 pb = (__u16)(s->dport_base + (flow >> 12));
	__u16 port = bswap16(s->mirror ? pb : pa);
	__u16 dport = bswap16(s->mirror ? pa : pb);
	__u16 w1 = bswap16((__u16)flow);
	__u16 w2 = bswap16((__u16)(seq >> 16));
	__u16 w3 = bswap16((__u16)seq);
	__u16 w4 = bswap16((__u16)(ts >> 16));
	__u16 w5 = bswap16((__u16)ts);
	__u32 sum = (__u16)~*c;

	sum += (__u16)~sp[0] + port;
	sum += (__u16)~sp[1] + dport;
	sum += (__u16)~p[1] + w1;
	sum += (__u16)~p[2] + w2;
	sum += (__u16)~p[3] + w3;
	sum += (__u16)~p[4] + w4;
	sum += (__u16)~p[5] + w5;
	sp[0] = port;
	sp[1] = dport;
	p[1] = w1;
	p[2] = w2;
	p[3] = w3;
	p[4] = w4;
	p[5] = w5;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	__u16 csum = (__u16)~sum;
	*c = csum ? csum : 0xffff;
	s->sent = n + 1;
	return XDP_TX;
}

SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&drops, &key);

	if (v)
		*v += 1;
	return XDP_DROP;
}

SEC("xdp")
int bench_redirect_map(struct xdp_md *ctx)
{
	/* Flags 0: a missing entry is XDP_ABORTED (veth counts it as an rx drop). */
	return bpf_redirect_map(&redir_port, 0, 0);
}

SEC("xdp")
int bench_redirect(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u32 *out = bpf_map_lookup_elem(&redir_out, &key);

	if (!out || !*out)
		return XDP_ABORTED;
	return bpf_redirect(*out, 0);
}

SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
