// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_frag.c - fragments of the pool's pages, and their holders.
 *
 * A fragment of up to a page is placed by the pool's heap (its allocator's:
 * nta.c, pow2.c or ppfrag.c), in pages the pool feeds it; with NTA_POOL_PAGE
 * it is a whole page. A larger one is a combined block of whole pages. The
 * holders of a block are counted in its live byte in the arena (a reader
 * sees "handed out" where it is not 0): get adds one, put takes one, and the
 * last put lets the block go: its chunks back to the heap (which hands the
 * pool back a page it empties), or the page to its destructor.
 *
 * A block a reader pins is not let go: the last put only marks it, and
 * nta_pool_reap() lets it go once no live reader pins it.
 */
#include <errno.h>
#include <stdlib.h>

#include "nta_small.h"
#include "pool_internal.h"

/* -- placing ---------------------------------------------------------------------- */

static uint32_t large_pages(const struct nta_pool *p, size_t size)
{
	uint64_t np = (size + p->a->page_size - 1) >> p->pshift;
	return p->cfg.allocator == NTA_POOL_SLAB ? nta_pow2_pages(np) : (uint32_t)np;
}

NTA_API uint64_t nta_pool_frag_size(const struct nta_pool *p, size_t size)
{
	if (size == 0 || size > ((uint64_t)p->npg << p->pshift))
		return 0;
	if (size > p->a->page_size)
		return (uint64_t)large_pages(p, size) << p->pshift;
	switch (p->cfg.allocator) {
	case NTA_POOL_SLAB:
		return 1ull << nta_pow2_class(p->a, size);
	case NTA_POOL_PAGE:
		return p->a->page_size;
	default:
		return ((size + p->cmask) >> p->cshift) << p->cshift;
	}
}

NTA_INLINE void held_one_at(struct nta_pool *p, uint8_t *lb, uint64_t bytes)
{
	p->st.fragments.frags++;
	p->st.fragments.frag_bytes += bytes;
	__atomic_store_n(lb, 1, __ATOMIC_RELEASE);
}

/* A fragment of bytes at off is handed out: one holder. */
NTA_INLINE void held_one(struct nta_pool *p, uint64_t off, uint64_t bytes)
{
	held_one_at(p, live_byte(p, off), bytes);
}

/* n contiguous ordinary pages within the budget: idle single pages cannot serve them, so the pool gives
 * back what it keeps idle to make room. */
static int64_t large_ordinary(struct nta_pool *p, uint32_t n)
{
	if (!pool_may_take(p, n) && !pool_make_room(p, n)) {
		p->st.budget.budget_refused++;
		return -ENOMEM;
	}
	return nta_large_get(p->a, p->heap, n);
}

static NTA_NOINLINE int64_t alloc_large(struct nta_pool *p, size_t size, unsigned flags)
{
	struct nta_arena *a = p->a;
	uint32_t n = large_pages(p, size);
	bool reserve = false;
	int64_t i = n <= a->h->max_pages ? large_ordinary(p, n) : -ENOMEM;

	if (i < 0 && (flags & NTA_F_RESERVE) && n <= a->h->max_pages) {
		i = nta_large_get(a, p->rheap, n);
		reserve = i >= 0;
		p->st.reserve.reserve_allocs += reserve;
		p->st.reserve.reserve_exhausted += !reserve;
	}
	if (i < 0) {
		p->st.alloc.alloc_fails++;
		return i;
	}
	p->pg[i] = (struct pp_page){ .state = PP_LARGE, .reserve = reserve, .frag = 1, .npages = n };
	p->st.alloc.slow_high_order++;
	pool_took(p, n, reserve);
	p->st.pages.pages_in_use += n;
	if (p->st.pages.pages_in_use > p->st.pages.peak_pages_in_use)
		p->st.pages.peak_pages_in_use = p->st.pages.pages_in_use;
	uint64_t off = off_of(p, (uint32_t)i);
	held_one(p, off, (uint64_t)n << a->page_shift);
	return (int64_t)off;
}

/* The ordinary heap could not place it (err): once more after the heap gave back what it keeps idle (a
 * slab's empty slabs of other classes), then, with NTA_F_RESERVE, in the reserve. */
static NTA_NOINLINE int64_t alloc_frag_slow(struct nta_pool *p, size_t size, unsigned flags, int64_t err)
{
	struct nta_arena *a = p->a;
	int64_t off = err;

	if (off == -ENOMEM && nta_heap_idle(a, p->heap)) {
		nta_heap_drain(a, p->heap);
		p->st.budget.budget_reclaims++;
		off = nta_heap_alloc(a, p->heap, size);
	}
	if (off == -ENOMEM && (flags & NTA_F_RESERVE)) {
		off = nta_heap_alloc(a, p->rheap, size);
		p->st.reserve.reserve_allocs += off > 0;
		p->st.reserve.reserve_exhausted += off == -ENOMEM;
	}
	if (off < 0) {
		p->st.alloc.alloc_fails += off == -ENOMEM;
		return off;
	}
	held_one(p, (uint64_t)off, nta_pool_frag_size(p, size));
	return off;
}

/* Any pool, any fragment: the general path. */
static NTA_NOINLINE int64_t alloc_frag_other(struct nta_pool *p, size_t size, unsigned flags)
{
	struct nta_arena *a = p->a;
	int64_t off;

	if (unlikely(size == 0))
		return -EINVAL;
	if (unlikely(pool_remote_pending(p))) /* puts other threads posted: applied first */
		nta_pool_drain_remote(p);
	if (unlikely(size > a->page_size))
		return alloc_large(p, size, flags);
	if (p->cfg.allocator == NTA_POOL_PAGE) {
		off = nta_pool_alloc_page(p, flags);
		if (off > 0) {
			p->pg[page_of(p, (uint64_t)off)].frag = 1;
			p->st.fragments.frags++;
			p->st.fragments.frag_bytes += nta_pool_frag_size(p, size);
		}
		return off;
	}
	uint32_t n = 0;
	if (likely(p->heap_kind == HEAP_NTA)) { /* the NTA: a block of exactly this length, freed a moment ago */
		n = (uint32_t)((size + p->cmask) >> p->cshift);
		off = nta_small_cache_pop(a, p->heap, n);
		if (likely(off)) {
			held_one(p, (uint64_t)off, (uint64_t)n << p->cshift);
			return off;
		}
	}
	p->direct = true; /* an empty page the heap meets on the way goes to the cache */
	off = n ? nta_small_alloc_regions(a, p->heap, n) : nta_heap_alloc(a, p->heap, size); /* NTA: cache missed */
	if (unlikely(off < 0))
		return alloc_frag_slow(p, size, flags, off);
	held_one(p, (uint64_t)off, n ? (uint64_t)n << p->cshift : nta_pool_frag_size(p, size));
	return off;
}

/*
 * The common case inline, with the geometry as constants: the NTA's pool in the default geometry, a
 * fragment of up to a page, nothing posted by other threads, and a block of this length freed a moment
 * ago. Everything else leaves at once for the general path.
 */
NTA_API int64_t nta_pool_alloc_frag(struct nta_pool *p, size_t size, unsigned flags)
{
	const struct nta_geom G = NTA_GEOM_DEFAULT;

	if (likely(p->frag_fast && size - 1 < (1u << G.page_shift) && !pool_remote_pending(p))) {
		const uint32_t n = (uint32_t)((size + (1u << G.chunk_shift) - 1) >> G.chunk_shift);
		uint32_t g;
		if (likely(nta_hview_pop(&p->hv, G, true, n, &g))) {
			held_one_at(p, live_byte_at(p, g), (uint64_t)n << G.chunk_shift);
			return (int64_t)((uint64_t)g << G.chunk_shift);
		}
	}
	return alloc_frag_other(p, size, flags);
}

NTA_API long nta_pool_alloc_frag_bulk(struct nta_pool *p, const uint32_t *sizes, int64_t *offs, size_t n,
				      unsigned flags)
{
	long ok = 0;

	for (size_t k = 0; k < n; k++) {
		int64_t off = nta_pool_alloc_frag(p, sizes[k], flags);
		offs[k] = off > 0 ? off : 0;
		ok += off > 0;
	}
	return ok;
}

/* -- holders ------------------------------------------------------------------- */

/* The bytes the block at off was handed (for the fragment counters). */
static uint64_t block_bytes(const struct nta_pool *p, uint32_t i, uint64_t off)
{
	const struct nta_arena *a = p->a;
	const struct pp_page *r = &p->pg[i];
	const struct nta_page *d = pg(a, i);

	if (r->state == PP_LARGE)
		return (uint64_t)r->npages << a->page_shift;
	if (r->state == PP_PAGE)
		return a->page_size;
	if (d->kind == PG_SLAB)
		return 1ull << d->cls;
	uint32_t c = (uint32_t)(off >> a->chunk_shift) & (a->cpp - 1);
	return (uint64_t)(nta_block_end(a, i, c) - c) << a->chunk_shift;
}

NTA_API int nta_pool_frag_reserve(const struct nta_pool *p, uint64_t off)
{
	uint32_t i;
	int err = held(p, off, &i);

	return err ? err : p->pg[i].reserve;
}

NTA_API int nta_pool_get(struct nta_pool *p, uint64_t off)
{
	uint32_t i;
	int err = held(p, off, &i);

	if (err)
		return err;
	uint8_t *lb = live_byte(p, off), n = *lb;
	if (n == UINT8_MAX)
		return -EOVERFLOW;
	__atomic_store_n(lb, n + 1, __ATOMIC_RELAXED);
	return 0;
}

/* The last holder of off let go, and readers exist: if one pins it, keep it for nta_pool_reap (true),
 * unless it cannot be remembered (the protocol: unhold_for_readers() in pool_internal.h). */
static NTA_NOINLINE bool defer_pinned(struct nta_pool *p, uint64_t off)
{
	if (likely(!nta_pinned(p->a, off)))
		return false;
	if (p->ndeferred == p->deferred_cap) {
		size_t cap = p->deferred_cap ? p->deferred_cap * 2 : 64;
		int64_t *nd = realloc(p->deferred, cap * sizeof(*nd));
		if (!nd)
			return false; /* cannot remember it: free it now (the reader's data may change) */
		p->deferred = nd;
		p->deferred_cap = cap;
	}
	p->deferred[p->ndeferred++] = (int64_t)off;
	p->st.fragments.pinned++;
	return true;
}

NTA_INLINE bool defer_if_pinned(struct nta_pool *p, uint64_t off)
{
	if (likely(!unhold_for_readers(p, off)))
		return false;
	return defer_pinned(p, off);
}

/* Nobody holds the block at off any more (its live byte is 0): let it go. */
NTA_INLINE void let_go(struct nta_pool *p, uint32_t i, uint64_t off, bool direct)
{
	struct pp_page *r = &p->pg[i];

	if (likely(r->state == PP_FRAG)) {
		uint64_t bytes = 0;
		p->direct = direct;
		if (likely(p->heap_kind == HEAP_NTA)) {
			const uint32_t c = (uint32_t)(off >> p->cshift) & (p->cpp - 1);
			bytes = (uint64_t)nta_small_free_block(p->a, p->a->desc[i].heap, i, c) << p->cshift;
		} else {
			int err = nta_heap_free_block(p->a, pg(p->a, i)->heap, off, &bytes);
			(void)err; /* held() saw a live block: only a bug fails here, which nta_pool_check finds */
		}
		p->st.fragments.frags--;
		p->st.fragments.frag_bytes -= bytes;
		return;
	}
	if (r->frag) {
		p->st.fragments.frags--;
		p->st.fragments.frag_bytes -= block_bytes(p, i, off);
	}
	p->st.pages.pages_in_use -= pp_pages(r);
	pool_page_unused(p, i, direct);
}

/* May the direct put of off recycle it inline: a whole page (not a reserve one, not a fragment's), its only
 * holder letting go, no destructor, room in the cache? Its record, or NULL. */
NTA_INLINE struct pp_page *page_direct(const struct nta_pool *p, uint64_t off)
{
	if (off & p->pmask) /* a fragment inside a page (the data region starts on a page) */
		return NULL;
	if (unlikely(off >= p->data_end) || unlikely(off < p->data_off))
		return NULL;
	struct pp_page *const r = &p->pg[page_of(p, off)];
	if (pp_head(r) != pp_head_of(PP_PAGE, 0, 0) || r->npages > 1) /* not reserve, not a fragment */
		return NULL;
	return *live_byte(p, off) == 1 && p->cache_len < p->direct_cap ? r : NULL;
}

/* What recycling a page into the alloc cache reads, taken before the reader protocol's barrier (which
 * would have every field read again after it). */
struct to_cache {
	struct pp_page *r;
	int64_t *cache;
	uint32_t len;  /* the cache's length, less than its size */
	uint64_t idle; /* pages idle once it is in (cache and ring) */
	uint64_t peak; /* the most idle so far */
};

NTA_INLINE struct to_cache to_cache_of(const struct nta_pool *p, struct pp_page *r)
{
	const uint32_t len = p->cache_len;

	return (struct to_cache){ .r = r, .cache = p->cache, .len = len, .idle = len + 1 + ring_count(p),
				  .peak = p->st.pages.peak_idle };
}

/* Into the alloc cache, nobody holding it: the page at off. */
NTA_INLINE void page_to_cache(struct nta_pool *p, uint64_t off, struct to_cache t)
{
	t.r->state = PP_CACHE;
	t.cache[t.len] = (int64_t)off;
	p->cache_len = t.len + 1;
	p->st.pages.pages_in_use--;
	p->st.recycle.cached++;
	if (t.idle > t.peak)
		p->st.pages.peak_idle = t.idle;
}

/* Readers exist: the page waits if one pins it, else goes to the cache. Out of line (a tail call). */
static NTA_NOINLINE int put_page_readers(struct nta_pool *p, uint64_t off)
{
	if (!defer_pinned(p, off)) /* the reader's pin keeps it: counted as the general path does */
		page_to_cache(p, off, to_cache_of(p, &p->pg[page_of(p, off)]));
	return 0;
}

static NTA_NOINLINE int put_general(struct nta_pool *p, uint64_t off, unsigned flags)
{
	uint32_t i;
	int err = held(p, off, &i);

	if (unlikely(err))
		return err;
	uint8_t *lb = live_byte(p, off), n = *lb;
	if (n > 1) { /* other holders remain */
		__atomic_store_n(lb, n - 1, __ATOMIC_RELAXED);
		return 0;
	}
	if (unlikely(defer_if_pinned(p, off))) { /* the reader's pin keeps it for now */
		p->st.fragments.frags -= p->pg[i].state == PP_FRAG || p->pg[i].frag;
		if (p->pg[i].state == PP_FRAG || p->pg[i].frag)
			p->st.fragments.frag_bytes -= block_bytes(p, i, off);
		return 0;
	}
	let_go(p, i, off, flags & NTA_POOL_DIRECT);
	return 0;
}

/* A fragment of n chunks nobody holds leaves the pool's hands: counted. */
NTA_INLINE void frag_gone(struct nta_pool *p, uint32_t n)
{
	p->st.fragments.frags--;
	p->st.fragments.frag_bytes -= (uint64_t)n << NTA_GEOM_DEFAULT.chunk_shift;
}

/* put_frag_fast() found readers: the block waits if one pins it, else is parked at its place. Out of line
 * (a tail call), so that the fast path keeps nothing across a call. */
static NTA_NOINLINE int park_pinned(struct nta_pool *p, uint64_t off, uint32_t n, uint32_t at)
{
	const struct nta_geom G = NTA_GEOM_DEFAULT;
	const uint64_t rel = off - p->data_off;

	if (!defer_pinned(p, off)) /* the reader's pin keeps it: counted as put_general does */
		nta_hview_park(&p->hv, G, true, (uint32_t)(off >> G.chunk_shift), (uint32_t)(rel >> G.page_shift),
			       (uint32_t)(rel >> G.chunk_shift) & (G.cpp - 1), n, at);
	frag_gone(p, n);
	return 0;
}

/*
 * The NTA's fragment put in the default geometry, its only holder letting go, the block parked in its
 * heap's cache: held()'s checks and the room to park it, then the reader protocol (unhold_at) and the
 * park, through the heap's view the pool keeps (p->hv), the geometry as constants. Anything else, with
 * nothing changed, goes to the general path, which frees what cannot be parked and gives a bad put its
 * errno. Through the arena's handle, with the heap read from the page, a free inline that combined and a
 * callee-saved register for each value the pinned case needed after its call, nta_pool_put took 171
 * instructions (callgrind, poolbench frag 200000 1 nta); 139 with the checks of the block's start in the
 * bitmaps and of its page's heap in the descriptor, which the live byte and the page's record answer: 124;
 * 118 with nothing spilled to the stack (nta_block_end_in's mask, nta_hview_room's test).
 */
NTA_INLINE int put_frag_fast(struct nta_pool *p, uint64_t off, unsigned flags)
{
	const struct nta_geom G = NTA_GEOM_DEFAULT;
	const struct nta_hview hv = p->hv, *const V = &hv; /* a copy: the live byte's store may alias p */
	const uint64_t rel = off - p->data_off; /* the data region starts on a page */

	if (unlikely(rel >= p->data_end - p->data_off || (rel & ((1u << G.chunk_shift) - 1))))
		return put_general(p, off, flags);
	const uint32_t i = (uint32_t)(rel >> G.page_shift), c = (uint32_t)(rel >> G.chunk_shift) & (G.cpp - 1);
	uint8_t *const lb = live_byte_at(p, off >> G.chunk_shift);
	/* A fragment page of the pool's ordinary heap (not the reserve's), and the put of a block's only holder: a
	 * live byte is not 0 only at the start of a block the pool handed out and parked nowhere (nta_pool_check
	 * proves it against the bitmaps), so this is a live block's start, not parked. */
	if (pp_head(&p->pg[i]) != pp_head_of(PP_FRAG, 0, 0) || *lb != 1)
		return put_general(p, off, flags);
	const uint32_t n = nta_block_end_in(V->bmp, G, i, c) - c;
	uint32_t at;
	if (!nta_hview_room(V, true, i, n, &at))
		return put_general(p, off, flags);
	if (unlikely(unhold_at(p, lb)))
		return park_pinned(p, off, n, at);
	nta_hview_park(V, G, true, (uint32_t)(off >> G.chunk_shift), i, c, n, at);
	frag_gone(p, n);
	return 0;
}

/* Not a whole page put direct: a fragment, or anything else. Out of line, so that the page's fast path
 * saves no registers for the fragment's (inline there, it took the page's from 56 to 75 instructions). */
static NTA_NOINLINE int put_frag(struct nta_pool *p, uint64_t off, unsigned flags)
{
	return likely(p->frag_fast) ? put_frag_fast(p, off, flags) : put_general(p, off, flags);
}

/*
 * page_pool's recycle_direct: a whole page its only holder gives back in the owner's context goes
 * straight into the alloc cache when nothing else has a say (no destructor, not a reserve page, room in
 * the cache; a reader's pin is looked for out of line). The same checks and counts as held(), let_go()
 * and pool_recycle() make on the general path, which takes everything else.
 */
NTA_API int nta_pool_put(struct nta_pool *p, uint64_t off, unsigned flags)
{
	struct pp_page *r;

	if (!(flags & NTA_POOL_DIRECT) || !(r = page_direct(p, off)))
		return put_frag(p, off, flags);
	const struct to_cache t = to_cache_of(p, r);
	if (unlikely(unhold_for_readers(p, off)))
		return put_page_readers(p, off);
	page_to_cache(p, off, t);
	return 0;
}

NTA_API long nta_pool_reap(struct nta_pool *p)
{
	long freed = 0;

	p->st.fragments.readers_reclaimed += (uint64_t)nta_readers_reclaim(p->a);
	for (size_t k = 0; k < p->ndeferred;) {
		uint64_t off = (uint64_t)p->deferred[k];
		if (nta_pinned(p->a, off)) {
			k++;
			continue;
		}
		p->deferred[k] = p->deferred[--p->ndeferred];
		p->st.fragments.pinned--;
		freed++;
		uint32_t i = page_of(p, off);
		struct pp_page *r = &p->pg[i];
		if (r->state == PP_FRAG || r->frag) { /* let_go counts it out again */
			p->st.fragments.frags++;
			p->st.fragments.frag_bytes += block_bytes(p, i, off);
		}
		let_go(p, i, off, false);
	}
	return freed;
}

NTA_API long nta_pool_put_bulk(struct nta_pool *p, const int64_t *offs, size_t n, unsigned flags,
			       size_t *first_bad)
{
	long first = 0;

	for (size_t k = 0; k < n; k++) {
		int err = offs[k] > 0 ? nta_pool_put(p, (uint64_t)offs[k], flags) : -EINVAL;
		if (err && !first) {
			first = err;
			if (first_bad)
				*first_bad = k;
		}
	}
	return first;
}
