/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_count.c - count every frame at the XDP hook, then return a fixed
 * verdict. Compiled by BCC; configured with -D flags:
 *   -DNTA_ACTION=NTA_ACT_DROP|NTA_ACT_PASS   (default NTA_ACT_DROP)
 *   -DNTA_QUEUES=N    RX queues of the device: above 1, frames and bytes are
 *                     also counted per queue, in nta_queue_stats (default 1)
 *   -DNTA_TIMING -DNTA_TIMING_GAPS=N   time each frame's gap from the one before it on its RX queue against
 *                    the replayer's schedule (nta_gaps, N entries; struct nta_timing per queue), the errors
 *                    in nta_timing_hist
 *   -DNTA_FLOWS=N    count the distinct flows (addresses, protocol, ports: nta_parse.h's flow hash) in
 *                    nta_flows, a hash map of N; a flow that finds it full is counted in nta_flows_over
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"
#include "nta_count.h"
#ifdef NTA_FLOWS
#include "nta_parse.h"
#endif

#ifndef NTA_ACTION
#define NTA_ACTION NTA_ACT_DROP
#endif
#ifndef NTA_QUEUES
#define NTA_QUEUES 1
#endif

BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);
#if NTA_QUEUES > 1
BPF_PERCPU_ARRAY(nta_queue_stats, struct nta_queue_stats, NTA_QUEUES);
#endif
#ifdef NTA_FLOWS
BPF_HASH(nta_flows, __u32, __u8, NTA_FLOWS);
BPF_PERCPU_ARRAY(nta_flows_over, __u64, 1);
#endif
#ifdef NTA_TIMING /* replay timing where the frames land, per RX queue (nta_shared.h: struct nta_timing) */
BPF_ARRAY(nta_timing, struct nta_timing, NTA_QUEUES);
BPF_ARRAY(nta_gaps, __u64, NTA_TIMING_GAPS);
BPF_ARRAY(nta_timing_hist, __u64, NTA_QUEUES * NTA_TIMING_BUCKETS);
#endif

int nta_xdp_count(struct xdp_md *ctx)
{
	u32 key = NTA_STATS_KEY;
	u64 now = bpf_ktime_get_ns();
	u32 len = nta_count(ctx, nta_stats.lookup(&key), now);
	u32 queue = ctx->rx_queue_index < NTA_QUEUES ? ctx->rx_queue_index : NTA_QUEUES - 1;

	if (!len)
		return XDP_ABORTED;
#ifdef NTA_FLOWS
	struct nta_meta m = {};
	__u8 one = 1;
	nta_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &m);
	if (nta_flows.update(&m.flow_hash, &one)) { /* full */
		__u64 *over = nta_flows_over.lookup(&key);
		if (over)
			(*over)++;
	}
#endif
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
#if NTA_QUEUES > 1
	struct nta_queue_stats *qs = nta_queue_stats.lookup(&queue);
	if (!qs)
		return XDP_ABORTED;
	qs->packets++;
	qs->bytes += len;
#endif
	return NTA_ACTION;
}
