/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_count.c - count every frame at the XDP hook, then return a fixed
 * verdict. Compiled by BCC; configured with -D flags:
 *   -DNTA_ACTION=NTA_ACT_DROP|NTA_ACT_PASS   (default NTA_ACT_DROP)
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"

#ifndef NTA_ACTION
#define NTA_ACTION NTA_ACT_DROP
#endif

BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);

int nta_xdp_count(struct xdp_md *ctx)
{
	u32 key = NTA_STATS_KEY;
	struct nta_xdp_stats *st = nta_stats.lookup(&key);
	u64 now = bpf_ktime_get_ns();

	if (!st)
		return XDP_ABORTED;
	if (st->packets == 0)
		st->first_ns = now;
	st->last_ns = now;
	st->packets++;
	st->bytes += bpf_xdp_get_buff_len(ctx);
	return NTA_ACTION;
}
