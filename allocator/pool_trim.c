// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_trim.c - a receive buffer cut to its frame once the frame's length
 * is known: its tail, and with nta_pool_frag_cut its head too, back to the
 * pool's heap at once, combined with free neighbours.
 *
 * Only the NTA can: its blocks are runs of chunks whose ends are bits, so a
 * block's end or start moves by setting a start bit and freeing the chunks
 * cut off. A size class, a page_frag carve or a page keeps its length.
 *
 * A head cut moves the block's start, which its holders and readers know it
 * by: puts other threads posted are applied first, it is refused while more
 * than one holder holds it, and the old start
 * is let go of under the reader protocol (pool_internal.h) before anything
 * moves, so that a reader pins either the old block, which then stays whole,
 * or nothing.
 */
#include <errno.h>

#include "nta_small.h"
#include "pool_internal.h"

/* The fragment at off, held, of the NTA and of a page or less: page *i, chunk *c. */
static int cuttable(const struct nta_pool *p, uint64_t off, size_t size, uint32_t *i, uint32_t *c)
{
	int err = held(p, off, i);

	if (unlikely(err))
		return err;
	if (size == 0)
		return -EINVAL;
	if (p->pg[*i].state != PP_FRAG || p->heap_kind != HEAP_NTA) /* a size class, a carve, a page or pages */
		return -EOPNOTSUPP;
	*c = (uint32_t)(off >> p->cshift) & (p->cpp - 1);
	return 0;
}

static void gave_back(struct nta_pool *p, uint64_t bytes)
{
	if (!bytes)
		return;
	p->st.fragments.trims++;
	p->st.fragments.trimmed_bytes += bytes;
	p->st.fragments.frag_bytes -= bytes;
}

/* The block at chunk c of page i cut to m chunks: the bytes given back. */
static uint64_t cut_tail(struct nta_pool *p, uint32_t i, uint32_t c, uint32_t m)
{
	return (uint64_t)nta_small_trim(p->a, p->a->desc[i].heap, i, c, m) << p->cshift;
}

NTA_API long nta_pool_frag_trim(struct nta_pool *p, uint64_t off, size_t size)
{
	uint32_t i, c;
	int err = cuttable(p, off, size, &i, &c);

	if (unlikely(err))
		return err;
	gave_back(p, cut_tail(p, i, c, (uint32_t)((size + p->cmask) >> p->cshift)));
	return (long)(((uint64_t)(nta_block_end(p->a, i, c) - c)) << p->cshift);
}

NTA_API int64_t nta_pool_frag_cut(struct nta_pool *p, uint64_t off, size_t head, size_t size)
{
	uint32_t i, c;

	if (pool_remote_pending(p)) /* a put posted for the old start is applied first, not left naming nothing */
		nta_pool_drain_remote(p);
	int err = cuttable(p, off, size, &i, &c);

	if (unlikely(err))
		return err;
	const uint32_t k = (uint32_t)(head >> p->cshift), m = (uint32_t)((size + p->cmask) >> p->cshift);
	if ((head & p->cmask) || k + m > nta_block_end(p->a, i, c) - c)
		return -EINVAL;
	if (!k) {
		gave_back(p, cut_tail(p, i, c, m));
		return (int64_t)off;
	}
	uint8_t *from = live_byte(p, off);
	if (__atomic_load_n(from, __ATOMIC_RELAXED) != 1)
		return -EBUSY; /* another holder knows it by off */
	if (unhold_for_readers(p, off) && nta_pinned(p->a, off)) {
		__atomic_store_n(from, 1, __ATOMIC_RELEASE); /* the reader keeps the block it pinned, whole */
		return -EBUSY;
	}
	const uint64_t back = (uint64_t)nta_small_cut_head(p->a, p->a->desc[i].heap, i, c, k) << p->cshift;
	__atomic_store_n(live_byte(p, off + head), 1, __ATOMIC_RELEASE);
	gave_back(p, back + cut_tail(p, i, c + k, m));
	return (int64_t)(off + head);
}
