// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * alloc.c - the front door: nta_alloc() and nta_free() on the arena's own
 * heaps (heap 0, and heap 1 for the reserve), by the arena's kind; blocks of
 * whole pages; and the accounting of what was asked for and handed out.
 *
 * Small blocks (up to a page) go to the heap's allocator: nta.c for
 * NTA_KIND_NTA, whose fast paths are inline (nta_small.h), pow2.c for
 * NTA_KIND_POW2. Larger ones are runs of whole pages ("combined" blocks):
 * exactly as many as the size needs for the NTA, a power of two for pow2.
 *
 * An ordinary allocation never takes the reserve: with NTA_F_RESERVE, one
 * that ordinary memory cannot hold comes from the reserve heap instead, and
 * is counted; without, one refused while the reserve had room is counted.
 */
#include <errno.h>

#include "nta_small.h"

/* -- accounting ------------------------------------------------------------
 * live blocks = allocs - frees is derived when read (stats.c), not counted
 * on the fast paths; cached blocks are the heaps' parked counts.
 */

static inline void account_alloc(struct nta_stats *st, size_t size, uint64_t handed)
{
	uint64_t req = st->bytes_requested + size, got = st->bytes_handed + handed;

	st->allocs++;
	st->bytes_requested = req;
	st->bytes_handed = got;
	if (req > st->peak_bytes_requested)
		st->peak_bytes_requested = req;
	if (got > st->peak_bytes_handed)
		st->peak_bytes_handed = got;
}

static inline void account_free(struct nta_stats *st, size_t size, uint64_t handed)
{
	st->frees++;
	st->bytes_requested -= size;
	st->bytes_handed -= handed;
}

void nta_account_alloc(struct nta_arena *a, size_t size, uint64_t handed)
{
	account_alloc(a->st, size, handed);
}

void nta_account_free(struct nta_arena *a, size_t size, uint64_t handed)
{
	account_free(a->st, size, handed);
}

/* -- blocks of whole pages -------------------------------------------------------- */

int64_t nta_large_get(struct nta_arena *a, uint32_t h, uint32_t npages)
{
	int64_t p = nta_pages_get(a, npages, heap(a, h)->flags & HEAP_RESERVE);

	if (p < 0)
		return p;
	pg(a, (uint32_t)p)->kind = PG_LARGE;
	pg(a, (uint32_t)p)->run = npages;
	for (uint32_t i = 0; i < npages; i++)
		pg(a, (uint32_t)p + i)->heap = (uint8_t)h;
	for (uint32_t i = 1; i < npages; i++)
		pg(a, (uint32_t)p + i)->kind = PG_LARGE_TAIL;
	a->st->large_pages += npages;
	return p;
}

void nta_large_put(struct nta_arena *a, uint32_t p)
{
	uint32_t n = pg(a, p)->run;

	a->st->large_pages -= n;
	nta_pages_put(a, p, n);
}

static uint32_t large_pages(const struct nta_arena *a, size_t size)
{
	uint64_t n = (size + a->page_size - 1) >> a->page_shift;
	return a->kind == NTA_KIND_POW2 ? nta_pow2_pages(n) : (uint32_t)n;
}

static int64_t large_alloc(struct nta_arena *a, size_t size, unsigned flags)
{
	uint32_t npages = large_pages(a, size);
	int64_t p = npages <= a->h->max_pages ? nta_large_get(a, HEAP_ARENA, npages) : -ENOMEM;
	bool reserve = false;

	if (p < 0 && (flags & NTA_F_RESERVE) && npages <= a->h->max_pages) {
		p = nta_large_get(a, HEAP_ARENA_RESERVE, npages);
		reserve = p >= 0;
	}
	if (p < 0) {
		if (!(flags & NTA_F_RESERVE) && nta_pages_budget(a, true) >= npages)
			a->st->reserve_denied++;
		return p;
	}
	if (reserve)
		a->st->reserve_allocs++;
	account_alloc(a->st, size, (uint64_t)npages << a->page_shift);
	return (int64_t)page_off(a, (uint32_t)p);
}

static int large_free(struct nta_arena *a, uint32_t p, uint64_t off, size_t size)
{
	if (off != page_off(a, p))
		return -ENOENT;
	if (size <= a->page_size || pg(a, p)->run != large_pages(a, size))
		return -ERANGE;
	account_free(a->st, size, (uint64_t)pg(a, p)->run << a->page_shift);
	nta_large_put(a, p);
	return 0;
}

/* -- small blocks ----------------------------------------------------------------- */

/* Heap 0; with NTA_F_RESERVE, heap 1 when heap 0 cannot. For the NTA, from their free regions: nta_alloc
 * found heap 0's cache empty, and the reserve heap's parks nothing. */
static NTA_NOINLINE int64_t small_alloc(struct nta_arena *a, size_t size, unsigned flags)
{
	bool nta = a->kind == NTA_KIND_NTA;
	uint32_t n = (uint32_t)((size + a->chunk_mask) >> a->chunk_shift);
	int64_t off = nta ? nta_small_alloc_regions(a, HEAP_ARENA, n) : nta_slab_alloc(a, HEAP_ARENA, size);

	if (off < 0 && (flags & NTA_F_RESERVE)) {
		off = nta ? nta_small_alloc_regions(a, HEAP_ARENA_RESERVE, n)
			  : nta_slab_alloc(a, HEAP_ARENA_RESERVE, size);
		if (off > 0)
			a->st->reserve_allocs++;
	} else if (off < 0) {
		const struct nta_classes *R = &a->heaps[HEAP_ARENA_RESERVE].lists;
		bool room = nta_pages_budget(a, true) > 0;
		for (uint32_t k = n; nta && !room && k <= a->cpp; k++)
			room = R->heads[k] != 0;
		if (!nta && !room)
			room = R->slabs[nta_pow2_class(a, size) - a->chunk_shift] != 0;
		if (room)
			a->st->reserve_denied++;
	}
	if (off > 0)
		account_alloc(a->st, size, nta ? (uint64_t)n << a->chunk_shift : 1ull << nta_pow2_class(a, size));
	return off;
}

/* -- the public calls --------------------------------------------------------------- */

NTA_API uint64_t nta_alloc_size(const struct nta_arena *a, size_t size)
{
	if (size == 0 || size > ((uint64_t)a->h->max_pages << a->page_shift))
		return 0;
	if (size <= a->page_size)
		return a->kind == NTA_KIND_POW2 ? 1ull << nta_pow2_class(a, size)
						: ((size + a->chunk_mask) >> a->chunk_shift) << a->chunk_shift;
	uint32_t n = large_pages(a, size);
	return n <= a->h->max_pages ? (uint64_t)n << a->page_shift : 0;
}

static NTA_NOINLINE int64_t alloc_slow(struct nta_arena *a, size_t size, unsigned flags)
{
	int64_t off;

	if (unlikely(!a->writable))
		return -EROFS;
	if (unlikely(size == 0 || size > ((uint64_t)a->h->max_pages << a->page_shift))) {
		a->st->alloc_fails++;
		return size ? -ENOMEM : -EINVAL;
	}
	off = size <= a->page_size ? small_alloc(a, size, flags) : large_alloc(a, size, flags);
	if (off < 0)
		a->st->alloc_fails++;
	return off;
}

/* A block of exactly this length, freed a moment ago, from heap 0's cache; 0 if it has none. */
NTA_INLINE int64_t alloc_cached(struct nta_arena *a, size_t size, const struct nta_geom G)
{
	const uint32_t n = (uint32_t)((size + (1u << G.chunk_shift) - 1) >> G.chunk_shift);
	const int64_t off = nta_small_cache_pop_g(a, G, HEAP_ARENA, n);

	if (likely(off)) {
		struct nta_stats *st = a->st;
		st->cache_hits++;
		account_alloc(st, size, (uint64_t)n << G.chunk_shift);
	}
	return off;
}

/* Any arena: heap 0's cache for an NTA arena of another geometry, then the slow path. */
static NTA_NOINLINE int64_t alloc_other(struct nta_arena *a, size_t size, unsigned flags)
{
	if (a->kind == NTA_KIND_NTA && !a->geom_default && size - 1 < a->page_size && a->writable) {
		const int64_t off = alloc_cached(a, size, nta_geom(a));
		if (off)
			return off;
	}
	return alloc_slow(a, size, flags);
}

/*
 * The fast path is for the common arena only (a->fast: the NTA, the default geometry, writable), with
 * the geometry as constants; everything else leaves at once, so that the fast path needs no more
 * registers than it uses (a shared body with the general geometry saved and restored six).
 */
NTA_API int64_t nta_alloc(struct nta_arena *a, size_t size, unsigned flags)
{
	if (likely(a->fast && size - 1 < NTA_PAGE_SIZE_DEFAULT)) {
		const int64_t off = alloc_cached(a, size, NTA_GEOM_DEFAULT);
		if (likely(off))
			return off;
	}
	return alloc_other(a, size, flags);
}

static NTA_NOINLINE int free_slow(struct nta_arena *a, uint64_t off, size_t size)
{
	const uint64_t data_off = (uint64_t)a->gpage0 << a->page_shift;
	const uint32_t ps = a->page_shift;
	int err;

	if (unlikely(!a->writable))
		return -EROFS;
	if (unlikely(off < data_off || off >= data_off + ((uint64_t)a->h->top << ps) || (off & a->chunk_mask) ||
		     size == 0)) {
		err = -EINVAL;
		goto bad;
	}
	const uint32_t p = (uint32_t)((off - data_off) >> ps);
	const struct nta_page *d = a->desc + p;
	if (unlikely(d->heap > HEAP_ARENA_RESERVE && d->kind != PG_FREE)) {
		err = -ENOENT; /* a pool's: not a block of the front door */
		goto bad;
	}
	switch (d->kind) {
	case PG_SMALL: {
		const uint32_t c = (uint32_t)(off >> a->chunk_shift) & (a->cpp - 1);
		if (likely(size <= a->page_size)) {
			const uint32_t n = (uint32_t)((size + a->chunk_mask) >> a->chunk_shift);
			err = nta_small_free(a, d->heap, p, c, n); /* nta_free's fast path could not park it */
			if (likely(!err))
				account_free(a->st, size, (uint64_t)n << a->chunk_shift);
		} else { /* too big for a small block, but say "already free" or "not a block" first */
			err = nta_check_small_free(a, p, c, 0);
		}
		break;
	}
	case PG_SLAB: {
		uint32_t k = d->cls;
		err = nta_slab_free(a, p, off, size);
		if (!err)
			account_free(a->st, size, 1ull << k);
		break;
	}
	case PG_LARGE:
		err = large_free(a, p, off, size);
		break;
	case PG_FREE:
		err = -EALREADY;
		break;
	default:
		err = -ENOENT;
	}
	if (likely(!err))
		return 0;
bad:
	a->st->bad_frees++;
	return err;
}

/*
 * Park a small block of heap 0 in its length's cache (nta_small_park checks
 * that it is one live block of this length); false, with nothing changed,
 * for anything else, a bad free included, which free_slow checks in full.
 */
NTA_INLINE bool free_parked(struct nta_arena *a, uint64_t off, size_t size, const struct nta_geom G)
{
	const uint64_t rel = off - a->data_off;

	if (unlikely(rel >= ((uint64_t)a->max_pages << G.page_shift) || (off & ((1u << G.chunk_shift) - 1)) ||
		     size - 1 >= (1u << G.page_shift)))
		return false;
	const uint32_t p = (uint32_t)(rel >> G.page_shift), c = (uint32_t)(rel >> G.chunk_shift) & (G.cpp - 1);
	const uint32_t n = (uint32_t)((size + (1u << G.chunk_shift) - 1) >> G.chunk_shift);
	const struct nta_page *d = a->desc + p;
	if (unlikely(d->kind != PG_SMALL || d->heap != HEAP_ARENA ||
		     !nta_small_park_g(a, G, HEAP_ARENA, (uint32_t)(off >> G.chunk_shift), p, c, n)))
		return false;
	account_free(a->st, size, (uint64_t)n << G.chunk_shift);
	return true;
}

static NTA_NOINLINE int free_other(struct nta_arena *a, uint64_t off, size_t size)
{
	if (a->kind == NTA_KIND_NTA && !a->geom_default && a->writable && free_parked(a, off, size, nta_geom(a)))
		return 0;
	return free_slow(a, off, size);
}

NTA_API int nta_free(struct nta_arena *a, uint64_t off, size_t size)
{
	if (likely(a->fast && free_parked(a, off, size, NTA_GEOM_DEFAULT)))
		return 0;
	return free_other(a, off, size);
}

NTA_API long nta_alloc_bulk(struct nta_arena *a, const uint32_t *sizes, int64_t *offs, size_t n,
			    unsigned flags)
{
	long ok = 0;

	if (!a->writable)
		return -EROFS;
	for (size_t i = 0; i < n; i++) {
		int64_t off = nta_alloc(a, sizes[i], flags);
		offs[i] = off > 0 ? off : 0;
		ok += off > 0;
	}
	return ok;
}

NTA_API long nta_free_bulk(struct nta_arena *a, const int64_t *offs, const uint32_t *sizes, size_t n,
			   size_t *first_bad)
{
	long first = 0;

	if (!a->writable)
		return -EROFS;
	for (size_t i = 0; i < n; i++) {
		int err = offs[i] > 0 ? nta_free(a, (uint64_t)offs[i], sizes[i]) : -EINVAL;
		if (err && !first) {
			first = err;
			if (first_bad)
				*first_bad = i;
		}
	}
	return first;
}

NTA_API int nta_cache_flush(struct nta_arena *a)
{
	if (!a->writable)
		return -EROFS;
	for (uint32_t h = 0; h < NTA_MAX_HEAPS; h++)
		if (a->heaps[h].kind == HEAP_NTA)
			nta_small_flush(a, h);
	a->st->cache_flushes++;
	return 0;
}
