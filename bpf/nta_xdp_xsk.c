/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_xsk.c - count every frame, then redirect it to the AF_XDP socket
 * of its RX queue (nta_xsks[queue], which the harness fills). Compiled by
 * BCC; -D flags:
 *   -DNTA_QUEUES=N   RX queues of the device, a socket each (default 1)
 * Per CPU and queue, nta_queue_stats counts the frames and bytes the queue
 * saw; submitted: redirected to the queue's socket; lost: no socket there
 * (dropped). What the socket then drops, the kernel counts in its
 * XDP_STATISTICS (no fill buffer: rx_dropped; its RX ring full:
 * rx_ring_full).
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"
#include "nta_count.h"

#ifndef NTA_QUEUES
#define NTA_QUEUES 1
#endif

BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);
BPF_PERCPU_ARRAY(nta_queue_stats, struct nta_queue_stats, NTA_QUEUES);
BPF_XSKMAP(nta_xsks, NTA_QUEUES);

int nta_xdp_xsk(struct xdp_md *ctx)
{
	u32 key = NTA_STATS_KEY, queue = ctx->rx_queue_index;
	u32 len = nta_count(ctx, nta_stats.lookup(&key), bpf_ktime_get_ns());

	if (queue >= NTA_QUEUES)
		queue = NTA_QUEUES - 1;
	struct nta_queue_stats *qs = nta_queue_stats.lookup(&queue);
	if (!len || !qs)
		return XDP_ABORTED;
	qs->packets++;
	qs->bytes += len;
	if (!nta_xsks.lookup(&queue)) {
		qs->lost++;
		return XDP_DROP;
	}
	qs->submitted++;
	return nta_xsks.redirect_map(queue, XDP_DROP);
}
