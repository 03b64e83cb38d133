/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_count.c - count every frame at the XDP hook, then return a fixed
 * verdict. Compiled by BCC; configured with -D flags:
 *   -DNTA_ACTION=NTA_ACT_DROP|NTA_ACT_PASS   (default NTA_ACT_DROP)
 *   -DNTA_QUEUES=N    RX queues of the device: above 1, frames and bytes are
 *                     also counted per queue, in nta_queue_stats (default 1)
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"
#include "nta_count.h"

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

int nta_xdp_count(struct xdp_md *ctx)
{
	u32 key = NTA_STATS_KEY;
	u32 len = nta_count(ctx, nta_stats.lookup(&key), bpf_ktime_get_ns());

	if (!len)
		return XDP_ABORTED;
#if NTA_QUEUES > 1
	u32 queue = ctx->rx_queue_index < NTA_QUEUES ? ctx->rx_queue_index : NTA_QUEUES - 1;
	struct nta_queue_stats *qs = nta_queue_stats.lookup(&queue);
	if (!qs)
		return XDP_ABORTED;
	qs->packets++;
	qs->bytes += len;
#endif
	return NTA_ACTION;
}
