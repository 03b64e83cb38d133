/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_count.c - count every frame at the XDP hook, then return a fixed
 * verdict. Compiled by BCC; configured with -D flags:
 *   -DNTA_ACTION=NTA_ACT_DROP|NTA_ACT_PASS   (default NTA_ACT_DROP)
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"
#include "nta_count.h"

#ifndef NTA_ACTION
#define NTA_ACTION NTA_ACT_DROP
#endif

BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);

int nta_xdp_count(struct xdp_md *ctx)
{
	u32 key = NTA_STATS_KEY;

	return nta_count(ctx, nta_stats.lookup(&key), bpf_ktime_get_ns()) ? NTA_ACTION : XDP_ABORTED;
}
