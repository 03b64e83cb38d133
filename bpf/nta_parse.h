/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_parse.h - a frame's L2-L4 as the XDP programs read it, into a struct nta_meta: up to two VLAN
 * tags, the ethertype after them, IPv4 or IPv6, TCP or UDP ports, and the flow hash of addresses,
 * protocol and ports (nta_mix; ctl_flows.c's nta_flow_hash computes the same in user space). A header
 * that runs past the frame marks it NTA_META_TRUNCATED and ends the parse. Every packet read is
 * checked against data_end, as the verifier wants. Include after nta_shared.h.
 */
#ifndef NTA_PARSE_H
#define NTA_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

struct vlan_hdr_ {
	__be16 tci;
	__be16 encap;
};

static __always_inline void nta_parse(void *data, void *end, struct nta_meta *m)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth), h = 0x9747b28c;
	__u16 proto;
	if ((void *)(eth + 1) > end) {
		m->flags = NTA_META_TRUNCATED;
		return;
	}
	proto = eth->h_proto;
	/* up to two VLAN tags (802.1ad outer, 802.1Q inner), unrolled for the verifier */
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr_ *v = data + off;
		if ((void *)(v + 1) > end) {
			m->flags = NTA_META_TRUNCATED;
			return;
		}
		m->vlan[0] = bpf_ntohs(v->tci);
		proto = v->encap;
		off += sizeof(*v);
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr_ *w = data + off;
			if ((void *)(w + 1) > end) {
				m->flags = NTA_META_TRUNCATED;
				return;
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
			return;
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
			return;
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
}

#endif /* NTA_PARSE_H */
