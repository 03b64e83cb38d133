/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_count.h - what every XDP program of the harness does first: count the
 * frame in its per-CPU slot of nta_stats (packets, bytes of the whole frame
 * with its fragments, first and last timestamp). Include after nta_shared.h.
 *
 * The program declares the map and looks its slot up itself, in its own
 * file: BCC rewrites map operations (nta_stats.lookup) only in the main
 * source file, not in headers. So:
 *
 *   BPF_PERCPU_ARRAY(nta_stats, struct nta_xdp_stats, 1);
 *   ...
 *   u32 key = NTA_STATS_KEY;
 *   u32 len = nta_count(ctx, nta_stats.lookup(&key), now);
 */
#ifndef NTA_COUNT_H
#define NTA_COUNT_H

/* Count this frame in st; returns its length, or 0 when the slot is missing (then abort). */
static __always_inline u32 nta_count(struct xdp_md *ctx, struct nta_xdp_stats *st, u64 now)
{
	u32 len = bpf_xdp_get_buff_len(ctx);

	if (!st)
		return 0;
	if (st->packets == 0)
		st->first_ns = now;
	st->last_ns = now;
	st->packets++;
	st->bytes += len;
	return len;
}

#endif /* NTA_COUNT_H */
