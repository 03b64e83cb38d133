// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool.c - a per-device page pool over an arena, after the kernel's
 * page_pool (net/core/page_pool.c): the same shape, defaults and counters.
 *
 * Pages come from the arena (pages.c) and are "mapped" once, on the way in;
 * they then recycle, mapped, through:
 *   - the alloc cache, a LIFO array the owner pops without locks;
 *   - the recycle ring, where pages freed outside the owner's fast context
 *     wait, moved to the cache `refill` at a time when the cache runs dry;
 * and go back to the arena (unmapped) only when both are full, when a
 * destructor says so, or when the pool is destroyed.
 *
 * The pool owns pages; where a fragment goes inside them is its heap's
 * (pool_frag.c): the pool feeds its heap pages from the cache, the ring or
 * the arena, and takes back, still mapped, each page the heap empties.
 *
 * Pages taken under the arena's reserve never enter the cache or the ring:
 * they go back to the arena when their holders are done, so an ordinary
 * allocation never gets one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool_internal.h"

static void spin_ns(uint32_t ns)
{
	struct timespec t0, t;

	if (!ns)
		return;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < (long)ns);
}

/* -- pages in and out of the arena ------------------------------------------ */

/* The ordinary pages the pool holds: handed out, holding fragments, idle in its cache and ring. */
static inline uint64_t ordinary_held(const struct nta_pool *p)
{
	return p->st.pages.hold - p->st.pages.release - p->st.pages.reserve_pages;
}

/* May the pool take n more ordinary pages from the arena? The one place the budget is enforced (reserve
 * pages are apart from it: the caller asks only for ordinary ones). */
bool pool_may_take(const struct nta_pool *p, uint32_t n)
{
	return !p->cfg.budget || ordinary_held(p) + n <= p->cfg.budget;
}

/* n pages (one block) came from the arena: mapped and held; those of the reserve taken from it. */
void pool_took(struct nta_pool *p, uint32_t n, bool reserve)
{
	p->st.pages.maps++;
	p->st.pages.hold += n;
	if (reserve) {
		uint64_t free = nta_pages_budget(p->a, true);
		p->st.pages.reserve_pages += n;
		p->st.reserve.reserve_taken += n;
		if (p->st.pages.reserve_pages > p->st.reserve.reserve_peak)
			p->st.reserve.reserve_peak = p->st.pages.reserve_pages;
		if (free < p->st.reserve.reserve_min_free)
			p->st.reserve.reserve_min_free = free;
	} else if (ordinary_held(p) > p->st.budget.budget_peak) {
		p->st.budget.budget_peak = ordinary_held(p);
	}
	spin_ns(p->cfg.map_cost_ns);
}

/* A page from the arena: mapped, the pool's (PG_POOL), within the budget. Its state is the caller's to set. */
static int64_t page_from_arena(struct nta_pool *p, bool reserve)
{
	int64_t i = reserve || pool_may_take(p, 1) ? nta_pages_get(p->a, 1, reserve) : -ENOMEM;

	if (i < 0)
		return i;
	struct nta_page *d = pg(p->a, (uint32_t)i);
	d->kind = PG_POOL;
	d->heap = (uint8_t)(reserve ? p->rheap : p->heap);
	p->pg[i] = (struct pp_page){ .state = PP_PAGE, .reserve = reserve };
	pool_took(p, 1, reserve);
	return i;
}

/* An ordinary page an allocation needs (not one more for the cache): a refusal of the budget is counted. */
static int64_t page_needed(struct nta_pool *p)
{
	if (!pool_may_take(p, 1)) {
		p->st.budget.budget_refused++;
		return -ENOMEM;
	}
	return page_from_arena(p, false);
}

/* Unmap a page (or combined block) and give it back to the arena; a reserve page to the reserve. */
void pool_page_to_arena(struct nta_pool *p, uint32_t i)
{
	struct pp_page *r = &p->pg[i];
	uint32_t n = pp_pages(r);

	if (r->state == PP_LARGE || n > 1)
		nta_large_put(p->a, i);
	else
		nta_pages_put(p->a, i, 1);
	p->st.pages.unmaps++;
	p->st.pages.release += n;
	if (r->reserve) {
		p->st.pages.reserve_pages -= n;
		p->st.reserve.reserve_returned += n;
	}
	spin_ns(p->cfg.map_cost_ns);
	*r = (struct pp_page){ 0 };
}

/* Give idle pages (the ring's, then the cache's) back to the arena until n more fit the budget; whether
 * they do now. For an allocation of several contiguous pages, which idle single pages cannot serve. */
bool pool_make_room(struct nta_pool *p, uint32_t n)
{
	if (!p->cfg.budget || pool_may_take(p, n) || ordinary_held(p) - (p->cache_len + ring_count(p)) + n >
	    p->cfg.budget)
		return false;
	while (!pool_may_take(p, n) && ring_count(p))
		pool_page_to_arena(p, page_of(p, (uint64_t)p->ring[p->ring_tail++ & p->ring_mask]));
	while (!pool_may_take(p, n) && p->cache_len)
		pool_page_to_arena(p, page_of(p, (uint64_t)p->cache[--p->cache_len]));
	p->st.budget.budget_reclaims++;
	return true;
}

/* -- recycling ---------------------------------------------------------------- */

static void note_idle(struct nta_pool *p)
{
	uint64_t idle = p->cache_len + ring_count(p);

	if (idle > p->st.pages.peak_idle)
		p->st.pages.peak_idle = idle;
}

/* Page i, nobody's now, back into the cache (from the owner's fast context) or the ring, else the arena. */
void pool_recycle(struct nta_pool *p, uint32_t i, bool direct)
{
	struct pp_page *r = &p->pg[i];

	if (r->reserve || r->state == PP_LARGE || pp_pages(r) > 1) { /* never handed to ordinary allocations */
		pool_page_to_arena(p, i);
		return;
	}
	if (direct) {
		if (p->cache_len < p->cfg.cache_size) {
			r->state = PP_CACHE;
			p->cache[p->cache_len++] = (int64_t)off_of(p, i);
			p->st.recycle.cached++;
			note_idle(p);
			return;
		}
		p->st.recycle.cache_full++;
	}
	if (ring_count(p) <= p->ring_mask) {
		r->state = PP_RING;
		p->ring[p->ring_head++ & p->ring_mask] = (int64_t)off_of(p, i);
		p->st.recycle.ring++;
		note_idle(p);
		return;
	}
	p->st.recycle.ring_full++;
	pool_page_to_arena(p, i);
}

/* -- taking pages ------------------------------------------------------------------ */

static NTA_NOINLINE int64_t alloc_slow(struct nta_pool *p, unsigned flags)
{
	int64_t i;

	if (p->ndeferred)
		nta_pool_reap(p);
	pool_publish(p);
	if (p->cache_len)
		goto cached;
	if (!ring_count(p)) {
		p->st.alloc.empty++;
	} else {
		uint32_t n = 0;
		while (n < p->cfg.refill && ring_count(p)) {
			int64_t off = p->ring[p->ring_tail++ & p->ring_mask];
			p->pg[page_of(p, (uint64_t)off)].state = PP_CACHE;
			p->cache[p->cache_len++] = off;
			n++;
		}
		p->st.alloc.refill++;
		goto cached;
	}
	/* The arena: `refill` pages at once, as the kernel's bulk allocation. */
	i = page_needed(p);
	if (i < 0 && (flags & NTA_F_RESERVE)) {
		i = page_from_arena(p, true);
		if (i < 0)
			p->st.reserve.reserve_exhausted++;
		else
			p->st.reserve.reserve_allocs++;
	}
	if (i < 0)
		return i;
	p->st.alloc.slow++;
	for (uint32_t n = 1; n < p->cfg.refill && p->cache_len < p->cfg.cache_size && !p->pg[i].reserve; n++) {
		int64_t more = page_from_arena(p, false);
		if (more < 0)
			break;
		p->pg[more].state = PP_CACHE;
		p->cache[p->cache_len++] = (int64_t)off_of(p, (uint32_t)more);
	}
	return (int64_t)off_of(p, (uint32_t)i);
cached:
	return p->cache[--p->cache_len];
}

/* The page last recycled into the alloc cache (which holds one). */
NTA_INLINE int64_t cache_pop(struct nta_pool *p)
{
	p->st.alloc.fast++;
	return p->cache[--p->cache_len];
}

/* A whole page for the owner: its offset (state PP_PAGE, nobody holding it yet), or -errno. */
static inline int64_t take_page(struct nta_pool *p, unsigned flags)
{
	int64_t off = likely(p->cache_len) ? cache_pop(p) : alloc_slow(p, flags);

	if (off > 0)
		p->pg[page_of(p, (uint64_t)off)].state = PP_PAGE;
	return off;
}

/* The page at off (state PP_PAGE) handed to its first holder. */
NTA_INLINE int64_t hand_page(struct nta_pool *p, int64_t off)
{
	struct pp_page *r = &p->pg[page_of(p, (uint64_t)off)];

	pp_set_head(r, pp_head_of(PP_PAGE, r->reserve, 0));
	if (++p->st.pages.pages_in_use > p->st.pages.peak_pages_in_use)
		p->st.pages.peak_pages_in_use = p->st.pages.pages_in_use;
	__atomic_store_n(live_byte(p, (uint64_t)off), 1, __ATOMIC_RELEASE);
	return off;
}

/* Puts other threads posted, an empty cache, a failure: out of line, so that the fast path saves no
 * registers for them. */
static NTA_NOINLINE int64_t alloc_page_other(struct nta_pool *p, unsigned flags)
{
	if (pool_remote_pending(p)) /* puts other threads posted: applied first */
		nta_pool_drain_remote(p);
	int64_t off = take_page(p, flags);
	if (off < 0) {
		p->st.alloc.alloc_fails++;
		return off;
	}
	return hand_page(p, off);
}

/* page_pool's fast path: the page last recycled into the alloc cache. */
NTA_API int64_t nta_pool_alloc_page(struct nta_pool *p, unsigned flags)
{
	if (unlikely(!p->cache_len || pool_remote_pending(p)))
		return alloc_page_other(p, flags);
	return hand_page(p, cache_pop(p));
}

/* -- feeding the pool's heaps -------------------------------------------------------- */

/* A page for one of our heaps: ordinary ones through the cache and ring, reserve ones from the reserve. */
static int64_t feed_get(void *ctx, bool reserve)
{
	struct nta_pool *p = ctx;
	int64_t i;

	if (reserve) {
		i = page_from_arena(p, true);
	} else {
		int64_t off = take_page(p, 0);
		i = off > 0 ? (int64_t)page_of(p, (uint64_t)off) : off;
	}
	if (i < 0)
		return i;
	p->pg[i].state = PP_FRAG;
	p->pg[i].frag = 0;
	p->st.pages.pages_in_use++;
	if (p->st.pages.pages_in_use > p->st.pages.peak_pages_in_use)
		p->st.pages.peak_pages_in_use = p->st.pages.pages_in_use;
	return i;
}

/* A page one of our heaps emptied: its last fragment is gone. */
static void feed_put(void *ctx, uint32_t i)
{
	struct nta_pool *p = ctx;

	p->pg[i].state = PP_PAGE;
	p->st.pages.pages_in_use--;
	pool_page_unused(p, i, p->direct);
}

/* -- life cycle --------------------------------------------------------------------- */

static int open_heaps(struct nta_pool *p)
{
	static const uint32_t kinds[] = { [NTA_POOL_NTA] = HEAP_NTA, [NTA_POOL_SLAB] = HEAP_SLAB,
					  [NTA_POOL_PPFRAG] = HEAP_PPFRAG, [NTA_POOL_PAGE] = HEAP_WHOLE };
	const struct nta_feed feed = { .get = feed_get, .put = feed_put, .ctx = p };
	int err;

	p->heap = pool_heap(p->slot, 0);
	p->rheap = pool_heap(p->slot, 1);
	p->heap_kind = kinds[p->cfg.allocator];
	p->frag_fast = p->heap_kind == HEAP_NTA && p->a->geom_default;
	p->hv = nta_hview(p->a, NTA_GEOM_DEFAULT, p->heap); /* used only when frag_fast */
	err = nta_heap_open(p->a, p->heap, kinds[p->cfg.allocator], 0, &feed);
	if (!err && (err = nta_heap_open(p->a, p->rheap, kinds[p->cfg.allocator], HEAP_RESERVE, &feed)))
		nta_heap_close(p->a, p->heap);
	return err;
}


static void pool_free(struct nta_pool *p)
{
	nta_zero_unmap(p->pg, (size_t)p->npg * sizeof(*p->pg));
	free(p->cache);
	nta_zero_unmap(p->ring, (size_t)(p->ring_mask + 1) * sizeof(*p->ring));
	free(p->pending);
	nta_zero_unmap(p->remote, (size_t)(p->remote_mask + 1) * sizeof(*p->remote));
	free(p->deferred);
	free(p);
}

NTA_API struct nta_pool *nta_pool_create(struct nta_arena *a, const struct nta_pool_config *cfg)
{
	struct nta_pool *p;
	struct nta_pool_config c = cfg ? *cfg : (struct nta_pool_config){ 0 };
	int err = ENOMEM;

	if (!a || !a->writable || c.allocator > NTA_POOL_PAGE) {
		errno = EINVAL;
		return NULL;
	}
	c.cache_size = c.cache_size ? c.cache_size : 128;
	c.refill = c.refill ? c.refill : 64;
	c.ring_size = c.ring_size ? c.ring_size : 1024;
	c.remote_size = c.remote_size ? c.remote_size : 1024;
	if (c.budget > a->h->max_pages)
		c.budget = a->h->max_pages; /* the arena's size is a budget already */
	if (c.ring_size & (c.ring_size - 1) || c.refill > c.cache_size || c.cache_size > (1u << 20) ||
	    c.ring_size > (1u << 24) || c.remote_size & (c.remote_size - 1) || c.remote_size > (1u << 24)) {
		errno = EINVAL;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->a = a;
	p->cfg = c;
	p->npg = a->h->max_pages;
	p->data_off = (uint64_t)a->gpage0 << a->page_shift;
	p->data_end = p->data_off + ((uint64_t)p->npg << a->page_shift);
	p->cshift = a->chunk_shift;
	p->pshift = a->page_shift;
	p->pmask = ((uint64_t)1 << a->page_shift) - 1;
	p->cmask = a->chunk_mask;
	p->cpp = a->cpp;
	p->words = a->words;
	p->bmp = a->bmp;
	p->live_base = (uintptr_t)a->live - (uintptr_t)(p->data_off >> a->chunk_shift);
	p->pg = nta_zero_map((size_t)p->npg * sizeof(*p->pg)); /* one a page: only the pages used take memory */
	p->cache = calloc(c.cache_size, sizeof(*p->cache));
	p->ring = nta_zero_map((size_t)c.ring_size * sizeof(*p->ring)); /* its pages take memory once used */
	p->ring_mask = c.ring_size - 1;
	if (!p->pg || !p->cache || !p->ring || pool_remote_init(p, c.remote_size))
		goto fail;
	p->st.budget.budget_pages = c.budget;
	p->st.reserve.reserve_min_free = nta_pages_budget(a, true);
	p->light_fences = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
	p->direct_cap = c.flags & NTA_POOL_BATCH_DTOR ? 0 : c.cache_size;
	p->nreaders = &a->rd->nreaders;
	for (p->slot = 0; p->slot < NTA_MAX_POOLS && a->rd->pools[p->slot].info.pid; p->slot++)
		;
	if (p->slot == NTA_MAX_POOLS) { /* a slot names the pool's heaps: no slot, no pool */
		err = EUSERS;
		goto fail;
	}
	if ((err = -open_heaps(p)))
		goto fail;
	p->pub = &a->rd->pools[p->slot];
	memset(&p->pub->info, 0, sizeof(p->pub->info));
	p->pub->info.ifindex = c.ifindex;
	p->pub->info.queue = c.queue;
	__atomic_store_n(&p->pub->info.pid, (uint32_t)getpid(), __ATOMIC_RELEASE);
	return p;
fail:
	pool_free(p);
	errno = err;
	return NULL;
}

static void empty_caches(struct nta_pool *p)
{
	while (p->cache_len)
		pool_page_to_arena(p, page_of(p, (uint64_t)p->cache[--p->cache_len]));
	while (ring_count(p))
		pool_page_to_arena(p, page_of(p, (uint64_t)p->ring[p->ring_tail++ & p->ring_mask]));
}

NTA_API int nta_pool_destroy(struct nta_pool *p, int timeout_ms, int64_t *pages, size_t n, size_t *count)
{
	struct timespec t0, t;

	if (!p)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		nta_pool_drain_remote(p);
		nta_pool_reap(p);
		p->direct = false;
		nta_heap_drain(p->a, p->heap); /* what their caches park goes back; an empty current page too */
		nta_heap_drain(p->a, p->rheap);
		empty_caches(p);
		if (p->st.pages.hold == p->st.pages.release)
			break;
		clock_gettime(CLOCK_MONOTONIC, &t);
		long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (ms >= timeout_ms) {
			size_t k = 0, inflight = 0;
			for (uint32_t i = 0; i < p->npg; i++)
				if (p->pg[i].state != PP_NONE) {
					if (k < n && pages)
						pages[k++] = (int64_t)off_of(p, i);
					inflight++;
				}
			if (count)
				*count = inflight;
			pool_publish(p);
			return -EBUSY;
		}
		struct timespec nap = { 0, 1000000 };
		nanosleep(&nap, NULL);
	}
	nta_heap_close(p->a, p->heap); /* every page is back in the arena: they hold none */
	nta_heap_close(p->a, p->rheap);
	__atomic_store_n(&p->pub->info.pid, 0, __ATOMIC_RELEASE);
	pool_free(p);
	if (count)
		*count = 0;
	return 0;
}
