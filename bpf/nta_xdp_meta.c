/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_meta.c - count every frame, parse L2-L4, and hand one fixed-size
 * record (struct nta_meta) per frame to user space through a BPF ring
 * buffer; then return a fixed verdict. Compiled by BCC; -D flags:
 *   -DNTA_ACTION=NTA_ACT_DROP|NTA_ACT_PASS   (default NTA_ACT_DROP)
 *   -DNTA_RING_PAGES=N      ring size in pages, a power of two (default 256; the harness's 1024)
 *   -DNTA_QUEUES=N          RX queues of the device, each with a ring of its own (default 1)
 *   -DNTA_FLOWS=N           count the distinct flows (addresses, protocol, ports: nta_parse.h's flow hash) in
 *                    nta_flows, a hash map of N; a flow that finds it full is counted in nta_flows_over
 *   -DNTA_PERMIT            mark the frames the --permit filter accepts (NTA_META_PERMIT) and count them
 *                           per queue: the filter is nta_permit_gen.h, translated for the run
 *                           (harness/permit.py), on -I
 * The record goes to the ring of the frame's RX queue: nta_meta_rings[queue]
 * (an array of ring buffers; the harness puts nta_meta_ring, the template, at
 * 0 and rings it made at the others), so that each queue's controller drains
 * its own. Per CPU and queue, nta_queue_stats counts the frames and bytes the
 * queue saw, the records submitted and the failed reserves (ring full: lost).
 * Records are submitted with BPF_RB_NO_WAKEUP: the consumer polls the ring
 * and never waits on it, and a wake-up is an irq_work on this CPU (forced
 * every 64 records, they halved the rate XDP ran at with live frames).
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"
#include "nta_count.h"
#include "nta_parse.h"
#ifdef NTA_PERMIT
#include "nta_permit.h"
#include "nta_permit_gen.h"
#endif

#ifndef NTA_ACTION
#define NTA_ACTION NTA_ACT_DROP
#endif
#ifndef NTA_RING_PAGES
#define NTA_RING_PAGES 256
#endif
#ifndef NTA_QUEUES
#define NTA_QUEUES 1
#endif

BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);
BPF_PERCPU_ARRAY(nta_queue_stats, struct nta_queue_stats, NTA_QUEUES);
BPF_RINGBUF_OUTPUT(nta_meta_ring, NTA_RING_PAGES);
BPF_ARRAY_OF_MAPS(nta_meta_rings, "nta_meta_ring", NTA_QUEUES);
#ifdef NTA_FLOWS
BPF_HASH(nta_flows, __u32, __u8, NTA_FLOWS);
BPF_PERCPU_ARRAY(nta_flows_over, __u64, 1);
#endif


int nta_xdp_meta(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	u32 key = NTA_STATS_KEY, queue = ctx->rx_queue_index;
	u64 now = bpf_ktime_get_ns();
	u32 len = nta_count(ctx, nta_stats.lookup(&key), now);

	if (queue >= NTA_QUEUES) /* the device has more queues than the program was told: share the last */
		queue = NTA_QUEUES - 1;
	struct nta_queue_stats *rs = nta_queue_stats.lookup(&queue);
	if (!len || !rs)
		return XDP_ABORTED;
	rs->packets++;
	rs->bytes += len;
	__u8 permit = 0;
#ifdef NTA_PERMIT
	struct nta_pkt pkt = { .data = data, .end = end, .ctx = ctx, .len = len };
	if (nta_permit(&pkt)) {
		permit = NTA_META_PERMIT;
		rs->permitted++;
	}
#endif

#if NTA_QUEUES > 1
	void *ring = nta_meta_rings.lookup(&queue);
	if (!ring)
		return XDP_ABORTED;
	struct nta_meta *m = bpf_ringbuf_reserve(ring, sizeof(struct nta_meta), 0);
#else /* one queue: its ring, without the lookup */
	struct nta_meta *m = nta_meta_ring.ringbuf_reserve(sizeof(struct nta_meta));
#endif
	if (!m) {
		rs->lost++;
		return NTA_ACTION;
	}
	__builtin_memset(m, 0, sizeof(*m));
	m->ts_ns = now;
	m->len = len;
	m->ifindex = ctx->ingress_ifindex;
	m->rx_queue = ctx->rx_queue_index;

	nta_parse(data, end, m);
	m->flags |= permit;
#ifdef NTA_FLOWS
	__u8 one = 1;
	if (nta_flows.update(&m->flow_hash, &one)) { /* full */
		__u64 *over = nta_flows_over.lookup(&key);
		if (over)
			(*over)++;
	}
#endif
	rs->submitted++;
	bpf_ringbuf_submit(m, BPF_RB_NO_WAKEUP);
	return NTA_ACTION;
}
