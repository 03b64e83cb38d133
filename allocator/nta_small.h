/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nta_small.h - the NTA's fast paths, inline for its two callers: the front
 * door (alloc.c, heap 0) and the page pool's fragments (pool_frag.c, the
 * pool's heap). A block of n chunks out of the size cache, and a free that
 * is checked and then parked there. Everything else is nta.c.
 *
 * They compute with a struct nta_geom passed by value: the handle's geometry
 * (nta_geom()), or, for an arena of the default geometry, the same values as
 * constants (NTA_GEOM_DEFAULT), so that each caller is compiled twice and
 * the common copy shifts and multiplies by immediates (the wrappers without
 * _g choose; alloc.c chooses once for the whole of nta_free and nta_alloc).
 * With alloc.c's split of its fast paths from their slow ones, that took
 * nta_free from 198 instructions to 132 (callgrind, IMIX trace, 16K window).
 * Every load comes before the first store: a store through a bitmap or a
 * slot may alias the handle's fields, and the compiler would load them again.
 */
#ifndef NTA_SMALL_H
#define NTA_SMALL_H

#include "nta_internal.h"

struct nta_geom {
	uint32_t page_shift, chunk_shift, cpp, words, depth;
};

#define NTA_GEOM_DEFAULT ((struct nta_geom){ 12, 5, 128, 2, NTA_DEFAULT_CACHE })
_Static_assert(NTA_PAGE_SIZE_DEFAULT == 1u << 12 && NTA_CHUNK_SIZE_DEFAULT == 1u << 5, "NTA_GEOM_DEFAULT");

NTA_INLINE struct nta_geom nta_geom(const struct nta_arena *a)
{
	return (struct nta_geom){ a->page_shift, a->chunk_shift, a->cpp, a->words, a->depth };
}

/*
 * A heap as its fast paths use it: its counts, its cache's entries, and the arena's descriptors and
 * bitmaps. The handle holds the arena's own (nta_hview(), its loads folded into the caller); a pool finds
 * its heap's once and keeps them, so that its fast paths go through no handle and multiply by no heap.
 * pool: a pool's ordinary heap, which counts in each page what it parks (heap_counts_parked()), is fed
 * by its pool and keeps its last page; false: the arena's heap 0. A constant at every call.
 */
struct nta_hview {
	struct nta_heap *hp;
	uint32_t *cache;        /* its entries: those of blocks of n chunks from cache + n * depth */
	struct nta_page *desc;
	uint64_t *bmp;
	uint32_t gpage0;
};

NTA_INLINE struct nta_hview nta_hview(const struct nta_arena *a, const struct nta_geom G, uint32_t h)
{
	return (struct nta_hview){ a->heaps + h, a->cache + cache_index(G.cpp, G.depth, h, 0, 0), a->desc, a->bmp,
				   a->gpage0 };
}

/*
 * Where the block starting at chunk c of page p ends: used chunks are cut
 * into blocks by start bits (an invariant nta_check() proves), so it is the
 * first chunk above c that is a start or free, a set bit of start | ~used.
 */
NTA_INLINE uint32_t nta_block_end_in(const uint64_t *bmp, const struct nta_geom G, uint32_t p, uint32_t c)
{
	const uint64_t *used = bmp + (size_t)p * 3 * G.words, *start = used + G.words;
	uint32_t w = c >> 6;
	uint64_t x = (start[w] | ~used[w]) & -((1ull << (c & 63)) << 1); /* the bits above c: the same shift as c's bit */

	while (!x) {
		if (++w >= G.words)
			return G.cpp;
		x = start[w] | ~used[w];
	}
	return (w << 6) + (uint32_t)__builtin_ctzll(x);
}

NTA_INLINE uint32_t nta_block_end_g(const struct nta_arena *a, const struct nta_geom G, uint32_t p, uint32_t c)
{
	return nta_block_end_in(a->bmp, G, p, c);
}

NTA_INLINE uint32_t nta_block_end(const struct nta_arena *a, uint32_t p, uint32_t c)
{
	return likely(a->geom_default) ? nta_block_end_g(a, NTA_GEOM_DEFAULT, p, c) : nta_block_end_g(a, nta_geom(a), p, c);
}

/* A parked block of n chunks from the heap's cache: true, *g its global chunk; false when it has none. */
NTA_INLINE bool nta_hview_pop(const struct nta_hview *V, const struct nta_geom G, bool pool, uint32_t n, uint32_t *g)
{
	uint32_t *const count = V->hp->cache_count + n;
	const uint32_t cnt = *count;

	if (!cnt)
		return false;
	*g = V->cache[n * G.depth + cnt - 1];
	const uint32_t p = (*g >> (G.page_shift - G.chunk_shift)) - V->gpage0, c = *g & (G.cpp - 1);
	uint64_t *const cached = V->bmp + ((size_t)p * 3 + BMP_CACHED) * G.words + (c >> 6);
	*count = cnt - 1;
	V->hp->parked--;
	*cached &= ~(1ull << (c & 63));
	if (pool)
		V->desc[p].aux--;
	return true;
}

/* The same from heap h, as an offset, 0 when it has none. */
NTA_INLINE int64_t nta_small_cache_pop_g(struct nta_arena *a, const struct nta_geom G, uint32_t h, uint32_t n)
{
	const struct nta_hview V = nta_hview(a, G, h);
	uint32_t g;

	return nta_hview_pop(&V, G, heap_counts_parked(h), n, &g) ? (int64_t)((uint64_t)g << G.chunk_shift) : 0;
}

NTA_INLINE int64_t nta_small_cache_pop(struct nta_arena *a, uint32_t h, uint32_t n)
{
	return likely(a->geom_default) ? nta_small_cache_pop_g(a, NTA_GEOM_DEFAULT, h, n)
				       : nta_small_cache_pop_g(a, nta_geom(a), h, n);
}

/*
 * May the heap park the live block of n chunks at page p? True, and *at its place in the length's cache;
 * false when there is no room, or when it is the last block in use of a pool's page (which its heap
 * combines and gives back, unless it keeps its last page). Nothing changes: nta_hview_park() parks it.
 */
NTA_INLINE bool nta_hview_room(const struct nta_hview *V, bool pool, uint32_t p, uint32_t n, uint32_t *at)
{
	const struct nta_heap *const hp = V->hp;
	const struct nta_page *const d = V->desc + p;

	*at = hp->cache_count[n];
	if (unlikely(*at >= hp->cache_limit))
		return false;
	return !(pool && d->live - d->aux == 1 && !heap_keeps_last(hp));
}

/* Park the block of n chunks at chunk c of page p, global chunk g, at its place in the cache. */
NTA_INLINE void nta_hview_park(const struct nta_hview *V, const struct nta_geom G, bool pool, uint32_t g, uint32_t p,
			       uint32_t c, uint32_t n, uint32_t at)
{
	V->cache[n * G.depth + at] = g;
	V->hp->cache_count[n] = at + 1;
	V->hp->parked++;
	V->bmp[((size_t)p * 3 + BMP_CACHED) * G.words + (c >> 6)] |= 1ull << (c & 63);
	if (pool)
		V->desc[p].aux++;
}

/*
 * Park the live block of n chunks at chunk c of page p (of heap h; global
 * chunk g) in the cache if there is room: true; false, with nothing changed,
 * when there is none, or when it is the last block in use of a pool's page
 * (which its heap combines and gives back).
 */
NTA_INLINE bool nta_small_park_live_g(struct nta_arena *a, const struct nta_geom G, uint32_t h, uint32_t g, uint32_t p,
				      uint32_t c, uint32_t n)
{
	const struct nta_hview V = nta_hview(a, G, h);
	uint32_t at;

	if (!nta_hview_room(&V, heap_counts_parked(h) && a->feed[h].put, p, n, &at))
		return false;
	nta_hview_park(&V, G, heap_counts_parked(h), g, p, c, n, at);
	return true;
}

/*
 * The same for a block a caller frees, as it says: parked if it is exactly
 * one live block of n chunks and there is room; false, with nothing changed,
 * for anything else (nta_small_free then checks it in full, gives a bad
 * free its exact errno, and combines a good one).
 *
 * A start bit at c that is not cached is a live block, and nta_block_end()
 * says where it ends: one count-trailing-zeros instead of range masks.
 */
NTA_INLINE bool nta_small_park_g(struct nta_arena *a, const struct nta_geom G, uint32_t h, uint32_t g, uint32_t p,
				 uint32_t c, uint32_t n)
{
	const uint64_t *const used = a->bmp + (size_t)p * 3 * G.words;
	const uint64_t bit = 1ull << (c & 63);

	if (unlikely(!(used[G.words + (c >> 6)] & bit) || (used[2 * G.words + (c >> 6)] & bit)))
		return false; /* not the start of a block, or parked already */
	if (unlikely(nta_block_end_g(a, G, p, c) != c + n))
		return false;
	return nta_small_park_live_g(a, G, h, g, p, c, n);
}

NTA_INLINE bool nta_small_park(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n)
{
	return likely(a->geom_default) ? nta_small_park_g(a, NTA_GEOM_DEFAULT, h, gchunk(a, p, c), p, c, n)
				       : nta_small_park_g(a, nta_geom(a), h, gchunk(a, p, c), p, c, n);
}

/* nta_small_park_live_g() in the arena's geometry, for the slow paths. */
NTA_INLINE bool nta_small_park_live(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n)
{
	return likely(a->geom_default) ? nta_small_park_live_g(a, NTA_GEOM_DEFAULT, h, gchunk(a, p, c), p, c, n)
				       : nta_small_park_live_g(a, nta_geom(a), h, gchunk(a, p, c), p, c, n);
}

/* Free the block of n chunks at chunk c of page p (of heap h): park it, or check it in full and combine it.
 * 0 or the negative errno of a bad free. */
NTA_INLINE int nta_small_free_fast(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n)
{
	return likely(nta_small_park(a, h, p, c, n)) ? 0 : nta_small_free(a, h, p, c, n);
}

/* Free the block known to start at chunk c of page p (a live block of heap h: its start bit set, not
 * parked), its length from the bitmaps. Returns its length in chunks. */
NTA_INLINE uint32_t nta_small_free_block_g(struct nta_arena *a, const struct nta_geom G, uint32_t h, uint32_t p,
					   uint32_t c)
{
	const uint32_t n = nta_block_end_g(a, G, p, c) - c;

	if (!nta_small_park_live_g(a, G, h, gchunk(a, p, c), p, c, n))
		nta_small_free(a, h, p, c, n);
	return n;
}

NTA_INLINE uint32_t nta_small_free_block(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c)
{
	return likely(a->geom_default) ? nta_small_free_block_g(a, NTA_GEOM_DEFAULT, h, p, c)
				       : nta_small_free_block_g(a, nta_geom(a), h, p, c);
}

/* Might a reader pin anything? (The reader protocol's first test, without a call.) */
static inline bool nta_readers_attached(const struct nta_arena *a)
{
	return __atomic_load_n(&a->rd->nreaders, __ATOMIC_SEQ_CST) != 0;
}

#endif /* NTA_SMALL_H */
