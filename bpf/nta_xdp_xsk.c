/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_xsk.c - count every frame, then redirect it to the AF_XDP socket
 * of its RX queue (nta_xsks[queue], which the harness fills). Compiled by
 * BCC; -D flags:
 *   -DNTA_QUEUES=N   RX queues of the device, a socket each (default 1)
 *   -DNTA_TIMING -DNTA_TIMING_GAPS=N   time each frame's gap from the one before it on its RX queue against
 *                    the replayer's schedule (nta_gaps, N entries; struct nta_timing per queue), the errors
 *                    in nta_timing_hist
 *   -DNTA_PERMIT     run the --permit filter (nta_permit_gen.h, translated for the run, on -I), count
 *                    what it accepts per queue, and mark every frame in its XDP metadata, which the
 *                    kernel copies in front of the frame into the socket's buffer: NTA_XSK_MARK, with
 *                    NTA_META_PERMIT when accepted (a frame whose metadata cannot be made goes unmarked)
 * Per CPU and queue, nta_queue_stats counts the frames and bytes the queue
 * saw; submitted: redirected to the queue's socket; lost: no socket there
 * (dropped). What the socket then drops, the kernel counts in its
 * XDP_STATISTICS (no fill buffer: rx_dropped; its RX ring full:
 * rx_ring_full).
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"
#include "nta_count.h"
#ifdef NTA_PERMIT
#include "nta_permit.h"
#include "nta_permit_gen.h"
#endif

#ifndef NTA_QUEUES
#define NTA_QUEUES 1
#endif

BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);
BPF_PERCPU_ARRAY(nta_queue_stats, struct nta_queue_stats, NTA_QUEUES);
BPF_XSKMAP(nta_xsks, NTA_QUEUES);
#ifdef NTA_TIMING /* replay timing where the frames land, per RX queue (nta_shared.h: struct nta_timing) */
BPF_ARRAY(nta_timing, struct nta_timing, NTA_QUEUES);
BPF_ARRAY(nta_gaps, __u64, NTA_TIMING_GAPS);
BPF_ARRAY(nta_timing_hist, __u64, NTA_QUEUES * NTA_TIMING_BUCKETS);
#endif

int nta_xdp_xsk(struct xdp_md *ctx)
{
	u32 key = NTA_STATS_KEY, queue = ctx->rx_queue_index;
	u64 now = bpf_ktime_get_ns();
	u32 len = nta_count(ctx, nta_stats.lookup(&key), now);

	if (queue >= NTA_QUEUES)
		queue = NTA_QUEUES - 1;
	struct nta_queue_stats *qs = nta_queue_stats.lookup(&queue);
	if (!len || !qs)
		return XDP_ABORTED;
	qs->packets++;
	qs->bytes += len;
#ifdef NTA_TIMING
	struct nta_timing *t = nta_timing.lookup(&queue);
	u32 gi = t ? t->base + t->k : 0;
	u64 *gap = t && t->count ? nta_gaps.lookup(&gi) : 0;
	if (gap) {
		int b = nta_timing_step(t, now, *gap);
		u32 hi = queue * NTA_TIMING_BUCKETS + (u32)b;
		u64 *h = b >= 0 ? nta_timing_hist.lookup(&hi) : 0;
		if (h)
			(*h)++;
	}
#endif

#ifdef NTA_PERMIT
	struct nta_pkt pkt = { .data = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end, .ctx = ctx,
			       .len = len };
	__u32 mark = NTA_XSK_MARK;
	if (nta_permit(&pkt)) {
		mark |= NTA_META_PERMIT;
		qs->permitted++;
	}
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)) == 0) {
		__u32 *meta = (void *)(long)ctx->data_meta;
		if ((void *)(meta + 1) <= (void *)(long)ctx->data)
			*meta = mark;
	}
#endif
	if (!nta_xsks.lookup(&queue)) {
		qs->lost++;
		return XDP_DROP;
	}
	qs->submitted++;
	return nta_xsks.redirect_map(queue, XDP_DROP);
}
