/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_meta.c - count every frame, parse L2-L4, and hand one fixed-size
 * record (struct nta_meta) per frame to user space through a BPF ring
 * buffer; then return a fixed verdict. Compiled by BCC; -D flags:
 *   -DNTA_ACTION=NTA_ACT_DROP|NTA_ACT_PASS   (default NTA_ACT_DROP)
 *   -DNTA_RING_PAGES=N      ring size in pages, a power of two (default 256; the harness's 1024)
 *   -DNTA_QUEUES=N          RX queues of the device, each with a ring of its own (default 1)
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
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include "nta_shared.h"
#include "nta_count.h"
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

struct vlan_hdr_ {
	__be16 tci;
	__be16 encap;
};

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

	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth), h = 0x9747b28c;
	__u16 proto;
	if ((void *)(eth + 1) > end) {
		m->flags = NTA_META_TRUNCATED;
		goto out;
	}
	proto = eth->h_proto;
	/* up to two VLAN tags (802.1ad outer, 802.1Q inner), unrolled for the verifier */
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr_ *v = data + off;
		if ((void *)(v + 1) > end) {
			m->flags = NTA_META_TRUNCATED;
			goto out;
		}
		m->vlan[0] = bpf_ntohs(v->tci);
		proto = v->encap;
		off += sizeof(*v);
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr_ *w = data + off;
			if ((void *)(w + 1) > end) {
				m->flags = NTA_META_TRUNCATED;
				goto out;
			}
			m->vlan[1] = bpf_ntohs(w->tci);
			proto = w->encap;
			off += sizeof(*w);
		}
	}
	m->ethertype = bpf_ntohs(proto);
	__u8 l4 = 0;
	void *l4h = 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		if ((void *)(ip + 1) > end) {
			m->flags = NTA_META_TRUNCATED;
			goto out;
		}
		m->flags |= NTA_META_L3;
		l4 = ip->protocol;
		h = nta_mix(nta_mix(h, ip->saddr), ip->daddr);
		if (ip->frag_off & bpf_htons(0x1fff)) {
			m->flags |= NTA_META_FRAGMENT;
		} else {
			__u32 ihl = (ip->ihl & 0xf) * 4;
			if (ihl >= sizeof(*ip))
				l4h = (void *)ip + ihl;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end) {
			m->flags = NTA_META_TRUNCATED;
			goto out;
		}
		m->flags |= NTA_META_L3;
		l4 = ip6->nexthdr; /* extension headers are not walked */
		#pragma unroll
		for (int i = 0; i < 4; i++)
			h = nta_mix(nta_mix(h, ip6->saddr.in6_u.u6_addr32[i]), ip6->daddr.in6_u.u6_addr32[i]);
		l4h = ip6 + 1;
	}
	m->l4_proto = l4;
	if (l4h && (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP)) {
		__be16 *ports = l4h;
		if ((void *)(ports + 2) > end) {
			m->flags |= NTA_META_TRUNCATED;
		} else {
			m->sport = bpf_ntohs(ports[0]);
			m->dport = bpf_ntohs(ports[1]);
			m->flags |= NTA_META_L4;
			h = nta_mix(h, ((__u32)ports[0] << 16) | ports[1]);
		}
	}
	m->flow_hash = nta_mix(h, l4);
out:
	m->flags |= permit;
	rs->submitted++;
	bpf_ringbuf_submit(m, BPF_RB_NO_WAKEUP);
	return NTA_ACTION;
}
