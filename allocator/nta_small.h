/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nta_small.h - the NTA's fast paths, inline for its two callers: the front
 * door (alloc.c, heap 0) and the page pool's fragments (pool_frag.c, the
 * pool's heap). A block of n chunks out of the size cache, and a free that
 * is checked and then parked there. Everything else is nta.c.
 *
 * They load the geometry into locals once: every store to a bitmap could
 * alias the header's 64-bit fields, and reloading them after each store cost
 * more than the work itself.
 */
#ifndef NTA_SMALL_H
#define NTA_SMALL_H

#include "nta_internal.h"

/*
 * Where the block starting at chunk c of page p ends: used chunks are cut
 * into blocks by start bits (an invariant nta_check() proves), so it is the
 * first chunk above c that is a start or free, a set bit of start | ~used.
 */
NTA_INLINE uint32_t nta_block_end(const struct nta_arena *a, uint32_t p, uint32_t c)
{
	const uint32_t words = a->words;
	const uint64_t *used = a->bmp + (size_t)p * 3 * words, *start = used + words;
	uint32_t w = c >> 6;
	uint64_t x = (start[w] | ~used[w]) & ((~0ull << (c & 63)) << 1);

	while (!x) {
		if (++w >= words)
			return a->cpp;
		x = start[w] | ~used[w];
	}
	return (w << 6) + (uint32_t)__builtin_ctzll(x);
}

/* A parked block of n chunks from heap h's cache, or 0 when it has none. */
NTA_INLINE int64_t nta_small_cache_pop(struct nta_arena *a, uint32_t h, uint32_t n)
{
	uint32_t *count = a->heaps[h].cache_count + n;
	const uint32_t cnt = *count;

	if (!cnt)
		return 0;
	const uint32_t cs = a->chunk_shift, g = cache_slot(a, h, n)[cnt - 1];
	const uint32_t p = (g >> (a->page_shift - cs)) - a->gpage0, c = g & (a->cpp - 1);
	uint64_t *cached = a->bmp + ((size_t)p * 3 + BMP_CACHED) * a->words;
	*count = cnt - 1;
	cached[c >> 6] &= ~(1ull << (c & 63));
	a->desc[p].aux--;
	return (int64_t)((uint64_t)g << cs);
}

/*
 * Free the block of n chunks at chunk c of page p (of heap h): check it, then
 * park it in the cache, or combine it (nta_small_free, which also works out
 * the exact errno of a bad free).
 *
 * A start bit at c that is not cached is a live block, and nta_block_end()
 * says where it ends: one count-trailing-zeros instead of range masks.
 */
NTA_INLINE int nta_small_free_fast(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n)
{
	const uint32_t words = a->words, w = c >> 6, b = c & 63;
	uint64_t *used = a->bmp + (size_t)p * 3 * words, *start = used + words, *cached = start + words;
	const uint64_t bit = 1ull << b;
	struct nta_heap *hp = a->heaps + h;
	struct nta_page *d = a->desc + p;

	if (unlikely(!(start[w] & bit) || (cached[w] & bit)))
		return nta_small_free(a, h, p, c, n);
	const uint32_t end = nta_block_end(a, p, c);
	uint32_t *count = hp->cache_count + n;
	const uint32_t cnt = *count;
	if (unlikely(end != c + n || cnt >= hp->cache_limit ||
		     (d->aux + 1 == d->live && a->feed[h].put && !nta_heap_keeps(a, h))))
		return nta_small_free(a, h, p, c, n); /* odd, no room, or the page's last block in use */
	cache_slot(a, h, n)[cnt] = (uint32_t)((((uint64_t)(a->gpage0 + p)) << (a->page_shift - a->chunk_shift)) + c);
	*count = cnt + 1;
	cached[w] |= bit;
	d->aux++;
	return 0;
}

/*
 * Free the block known to start at chunk c of page p (a live block of heap h:
 * its start bit set, not parked), its length from the bitmaps: park it, or
 * combine it. Returns its length in chunks.
 */
NTA_INLINE uint32_t nta_small_free_block(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c)
{
	const uint32_t n = nta_block_end(a, p, c) - c;
	struct nta_heap *hp = a->heaps + h;
	struct nta_page *d = a->desc + p;
	uint32_t *count = hp->cache_count + n;
	const uint32_t cnt = *count;

	if (unlikely(cnt >= hp->cache_limit || (d->aux + 1 == d->live && a->feed[h].put && !nta_heap_keeps(a, h)))) {
		nta_small_free(a, h, p, c, n);
		return n;
	}
	cache_slot(a, h, n)[cnt] = (uint32_t)((((uint64_t)(a->gpage0 + p)) << (a->page_shift - a->chunk_shift)) + c);
	*count = cnt + 1;
	a->bmp[((size_t)p * 3 + BMP_CACHED) * a->words + (c >> 6)] |= 1ull << (c & 63);
	d->aux++;
	return n;
}

/* Might a reader pin anything? (The reader protocol's first test, without a call.) */
static inline bool nta_readers_attached(const struct nta_arena *a)
{
	return __atomic_load_n(&a->rd->nreaders, __ATOMIC_SEQ_CST) != 0;
}

#endif /* NTA_SMALL_H */
