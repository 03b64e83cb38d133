// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool.c - a per-device page pool over an arena, after the kernel's
 * page_pool (net/core/page_pool.c): the same shape, defaults and counters.
 *
 * Pages come from the arena (nta_alloc of a page: a page-aligned block) and
 * are "mapped" once, on the way in; they then recycle, mapped, through:
 *   - the alloc cache, a LIFO array the owner pops without locks;
 *   - the recycle ring, where pages freed outside the owner's fast context
 *     wait, moved to the cache `refill` at a time when the cache runs dry;
 * and go back to the arena (unmapped) only when both are full, when a
 * destructor says so, or when the pool is destroyed.
 *
 * Fragments: a pool page can be carved into fragments of exactly
 * ceil(size / chunk) chunks (not a power of two, not the rest of the page):
 * the "current" fragment page takes new fragments first fit; a fragment's
 * chunks are free again when its last holder lets go, so a page in use can
 * be refilled. A page's refcount counts the holders of it and of every
 * fragment in it, plus one while it is the current fragment page.
 * Fragments larger than a page are combined blocks straight from the arena.
 *
 * At refcount zero the page's destructor runs: recycle (the default), steal
 * (the destructor keeps the page, which comes back with one reference) or
 * release. With NTA_POOL_BATCH_DTOR the pages wait instead, to be taken and
 * judged in batches (Python).
 *
 * Pages taken under the arena's reserve never enter the cache or the ring:
 * they go back to the arena when their holders are done, so an ordinary
 * allocation never gets one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "nta_internal.h"

enum pp_state {
	PP_NONE = 0, /* not the pool's */
	PP_CACHE,
	PP_RING,
	PP_PAGE,     /* handed out whole */
	PP_FRAG,     /* carved into fragments */
	PP_LARGE,    /* a combined block for a fragment larger than a page */
	PP_PENDING,  /* refcount 0, waiting for a batch destructor */
};

struct pp_frag {
	uint64_t used[NTA_MAX_WORDS], start[NTA_MAX_WORDS];
	uint64_t deferred[NTA_MAX_WORDS]; /* let go of, but pinned by a reader */
	uint16_t ref[NTA_MAX_CPP]; /* holders of the fragment starting at each chunk */
};

struct pp_page {
	uint8_t state;
	uint8_t reserve;  /* taken under the arena's reserve */
	uint8_t current;  /* the current fragment page */
	uint8_t deferred; /* a whole page let go of, but pinned by a reader */
	uint32_t ref;
	uint32_t npages;  /* PP_LARGE */
	struct pp_frag *frag;
};

struct nta_pool {
	struct nta_arena *a;
	struct nta_pool_config cfg;
	struct pp_page *pg;        /* by arena page index */
	uint32_t npg;
	int64_t *cache;
	uint32_t cache_len;
	int64_t *ring;             /* owner-only: pages recycled outside the fast context */
	uint32_t ring_head, ring_tail, ring_mask;
	int64_t cur;               /* current fragment page, 0 = none */
	nta_pool_dtor_fn dtor;
	void *dtor_ctx;
	int64_t *pending;
	size_t npending, pending_cap;
	int64_t *deferred;         /* blocks whose free waits for readers to unpin */
	size_t ndeferred, deferred_cap;
	struct nta_pool_pub *pub;  /* our slot in the arena, or NULL when all are taken */
	bool light_fences;         /* registered for readers' membarrier: no fence of our own */
	pthread_mutex_t remote_lock;
	int64_t *remote;
	size_t nremote, remote_cap;
	struct nta_pool_stats st;
};

static void publish(struct nta_pool *p);

/* -- helpers --------------------------------------------------------------- */

static inline uint32_t page_of(const struct nta_pool *p, uint64_t off)
{
	return (uint32_t)((off - ((uint64_t)p->a->gpage0 << p->a->page_shift)) >> p->a->page_shift);
}

static inline uint64_t off_of(const struct nta_pool *p, uint32_t page)
{
	return ((uint64_t)(p->a->gpage0 + page)) << p->a->page_shift;
}

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

/* The block starting at off is handed out (1) or not (0): what a reader's pin checks. */
static inline uint8_t *live_byte(struct nta_pool *p, uint64_t off)
{
	return p->a->live + ((off - ((uint64_t)p->a->gpage0 << p->a->page_shift)) >> p->a->chunk_shift);
}

static inline void set_live(struct nta_pool *p, uint64_t off)
{
	__atomic_store_n(live_byte(p, off), 1, __ATOMIC_RELEASE);
}

/*
 * Last holder of off let go: if a reader pins it, keep it for nta_pool_reap.
 *
 * Clearing the live byte and then reading the pins needs a StoreLoad fence
 * against a reader that stores a pin and then reads the byte (reader.c).
 * The fence is asymmetric: this process registered for
 * MEMBARRIER_CMD_GLOBAL_EXPEDITED, and a reader issues that membarrier
 * between its store and its load, which runs a full barrier on our CPUs; so
 * here a compiler barrier is enough. Without the registration, a seq_cst
 * store.
 */
static bool defer_if_pinned(struct nta_pool *p, uint64_t off)
{
	if (likely(p->light_fences)) {
		__atomic_store_n(live_byte(p, off), 0, __ATOMIC_RELAXED);
		__asm__ __volatile__("" ::: "memory");
	} else {
		__atomic_store_n(live_byte(p, off), 0, __ATOMIC_SEQ_CST);
	}
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

static inline uint32_t ring_count(const struct nta_pool *p)
{
	return p->ring_head - p->ring_tail;
}

/* -- pages in and out of the arena ------------------------------------------ */

/* A page from the arena: mapped, held. */
static int64_t page_from_arena(struct nta_pool *p, bool reserve)
{
	int64_t off = nta_alloc(p->a, p->a->page_size, reserve ? NTA_F_RESERVE : 0);

	if (off < 0)
		return off;
	struct pp_page *r = &p->pg[page_of(p, (uint64_t)off)];
	r->state = PP_PAGE;
	r->reserve = reserve && (p->a->desc[page_of(p, (uint64_t)off)].flags & PG_RESERVE);
	r->ref = 0;
	r->current = 0;
	p->st.pages.maps++;
	p->st.pages.hold++;
	if (r->reserve)
		p->st.pages.reserve_pages++;
	spin_ns(p->cfg.map_cost_ns);
	return off;
}

/* Unmap a page (or combined block) and give it back to the arena. */
static void page_to_arena(struct nta_pool *p, uint32_t i)
{
	struct pp_page *r = &p->pg[i];
	uint32_t n = r->state == PP_LARGE ? r->npages : 1;
	int err = nta_free(p->a, off_of(p, i), (size_t)n << p->a->page_shift);

	(void)err; /* a page of ours: cannot fail but for a bug, which nta_pool_check finds */
	p->st.pages.unmaps++;
	p->st.pages.release += n;
	if (r->reserve)
		p->st.pages.reserve_pages -= n;
	spin_ns(p->cfg.map_cost_ns);
	r->state = PP_NONE;
	r->reserve = 0;
	r->ref = 0;
	r->npages = 0;
}

/* -- recycling ---------------------------------------------------------------- */

static void recycle(struct nta_pool *p, uint32_t i, bool direct)
{
	struct pp_page *r = &p->pg[i];

	if (r->reserve || r->state == PP_LARGE) { /* never handed to ordinary allocations again */
		page_to_arena(p, i);
		return;
	}
	if (direct) {
		if (p->cache_len < p->cfg.cache_size) {
			r->state = PP_CACHE;
			p->cache[p->cache_len++] = (int64_t)off_of(p, i);
			p->st.recycle.cached++;
			return;
		}
		p->st.recycle.cache_full++;
	}
	if (ring_count(p) <= p->ring_mask) {
		r->state = PP_RING;
		p->ring[p->ring_head++ & p->ring_mask] = (int64_t)off_of(p, i);
		p->st.recycle.ring++;
		return;
	}
	p->st.recycle.ring_full++;
	page_to_arena(p, i);
}

static void apply_verdict(struct nta_pool *p, uint32_t i, int verdict, bool direct)
{
	struct pp_page *r = &p->pg[i];

	switch (verdict) {
	case NTA_DTOR_STEAL: /* the destructor keeps it: one reference, whole */
		r->state = r->state == PP_LARGE ? PP_LARGE : PP_PAGE;
		r->ref = 1;
		p->st.destructor.dtor_steal++;
		p->st.pages.pages_in_use += r->state == PP_LARGE ? r->npages : 1;
		break;
	case NTA_DTOR_RELEASE:
		p->st.destructor.dtor_release++;
		p->st.recycle.released_refcnt++;
		page_to_arena(p, i);
		break;
	default:
		recycle(p, i, direct);
	}
}

/* Refcount reached zero. */
static void page_unused(struct nta_pool *p, uint32_t i, bool direct)
{
	struct pp_page *r = &p->pg[i];

	p->st.pages.pages_in_use -= r->state == PP_LARGE ? r->npages : 1;
	if (r->state == PP_FRAG)
		r->state = PP_PAGE; /* all its fragments are gone: a whole page again */
	if (p->cfg.flags & NTA_POOL_BATCH_DTOR) {
		if (p->npending == p->pending_cap) {
			size_t cap = p->pending_cap ? p->pending_cap * 2 : 256;
			int64_t *np = realloc(p->pending, cap * sizeof(*np));
			if (!np) { /* no room to wait: judge it now, as the default would */
				apply_verdict(p, i, NTA_DTOR_RECYCLE, direct);
				return;
			}
			p->pending = np;
			p->pending_cap = cap;
		}
		r->state = r->state == PP_LARGE ? PP_LARGE : PP_PENDING;
		if (r->state == PP_LARGE)
			r->ref = 0;
		p->pending[p->npending++] = (int64_t)off_of(p, i);
		p->st.destructor.dtor_pending++;
		return;
	}
	if (p->dtor) {
		p->st.destructor.dtor_calls++;
		apply_verdict(p, i, p->dtor(p->dtor_ctx, p, off_of(p, i)), direct);
		return;
	}
	recycle(p, i, direct);
}

/* -- allocation ------------------------------------------------------------------ */

static NTA_NOINLINE int64_t alloc_slow(struct nta_pool *p, unsigned flags)
{
	int64_t off;

	if (p->nremote)
		nta_pool_drain_remote(p);
	if (p->ndeferred)
		nta_pool_reap(p);
	publish(p);
	if (p->cache_len)
		goto cached;
	if (!ring_count(p)) {
		p->st.alloc.empty++;
	} else {
		uint32_t n = 0;
		while (n < p->cfg.refill && ring_count(p)) {
			off = p->ring[p->ring_tail++ & p->ring_mask];
			p->pg[page_of(p, (uint64_t)off)].state = PP_CACHE;
			p->cache[p->cache_len++] = off;
			n++;
		}
		p->st.alloc.refill++;
		goto cached;
	}
	/* The arena: `refill` pages at once, as the kernel's bulk allocation. */
	off = page_from_arena(p, false);
	if (off < 0 && (flags & NTA_F_RESERVE))
		off = page_from_arena(p, true);
	if (off < 0) {
		p->st.alloc.alloc_fails++;
		return off;
	}
	p->st.alloc.slow++;
	for (uint32_t n = 1; n < p->cfg.refill && p->cache_len < p->cfg.cache_size &&
			     !p->pg[page_of(p, (uint64_t)off)].reserve; n++) {
		int64_t more = page_from_arena(p, false);
		if (more < 0)
			break;
		p->pg[page_of(p, (uint64_t)more)].state = PP_CACHE;
		p->cache[p->cache_len++] = more;
	}
	return off;
cached:
	return p->cache[--p->cache_len];
}

NTA_API int64_t nta_pool_alloc_page(struct nta_pool *p, unsigned flags)
{
	int64_t off = likely(p->cache_len) ? (p->st.alloc.fast++, p->cache[--p->cache_len]) : alloc_slow(p, flags);

	if (off > 0) {
		struct pp_page *r = &p->pg[page_of(p, (uint64_t)off)];
		r->state = PP_PAGE;
		r->ref = 1;
		p->st.pages.pages_in_use++;
		set_live(p, (uint64_t)off);
	}
	return off;
}

/* Lowest clear bit at or above i (below n), or n. */
static inline uint32_t next_clear(const uint64_t *w, uint32_t i, uint32_t n)
{
	while (i < n) {
		uint64_t m = ~w[i >> 6] & (~0ull << (i & 63));
		if (m) {
			uint32_t b = (i & ~63u) + (uint32_t)__builtin_ctzll(m);
			return b < n ? b : n;
		}
		i = (i & ~63u) + 64;
	}
	return n;
}

/* First fit of n free chunks in a fragment page, or -1. */
static int frag_fit(const struct pp_frag *f, uint32_t cpp, uint32_t n)
{
	for (uint32_t i = next_clear(f->used, 0, cpp); i + n <= cpp; i = next_clear(f->used, i, cpp)) {
		uint32_t e = bit_next_set(f->used, i, cpp);
		if (e - i >= n)
			return (int)i;
		i = e;
	}
	return -1;
}

static void frag_page_drop(struct nta_pool *p, bool direct)
{
	if (!p->cur)
		return;
	uint32_t i = page_of(p, (uint64_t)p->cur);
	p->pg[i].current = 0;
	p->cur = 0;
	if (--p->pg[i].ref == 0)
		page_unused(p, i, direct);
}

NTA_API int64_t nta_pool_alloc_frag(struct nta_pool *p, size_t size, unsigned flags)
{
	struct nta_arena *a = p->a;

	if (size == 0)
		return -EINVAL;
	if (p->cfg.flags & NTA_POOL_FRAG_POW2) /* the baseline: a power of two, at least a chunk */
		size = (size_t)1 << (size <= a->chunk_mask + 1u ? a->chunk_shift
							      : 64u - (uint32_t)__builtin_clzll(size - 1));
	if (size > a->page_size) { /* a combined block, straight from the arena */
		uint32_t np = (uint32_t)((size + a->page_size - 1) >> a->page_shift);
		int64_t off = nta_alloc(a, (size_t)np << a->page_shift, 0);
		bool reserve = false;
		if (off < 0 && (flags & NTA_F_RESERVE)) {
			off = nta_alloc(a, (size_t)np << a->page_shift, NTA_F_RESERVE);
			reserve = off > 0;
		}
		if (off < 0) {
			p->st.alloc.alloc_fails++;
			return off;
		}
		struct pp_page *r = &p->pg[page_of(p, (uint64_t)off)];
		*r = (struct pp_page){ .state = PP_LARGE, .ref = 1, .npages = np, .reserve = reserve, .frag = r->frag };
		set_live(p, (uint64_t)off);
		p->st.alloc.slow_high_order++;
		p->st.pages.maps++;
		p->st.pages.hold += np;
		p->st.pages.pages_in_use += np;
		if (reserve)
			p->st.pages.reserve_pages += np;
		spin_ns(p->cfg.map_cost_ns);
		return off;
	}
	uint32_t n = (uint32_t)((size + a->chunk_mask) >> a->chunk_shift), i;
	int c = -1;
	if (p->cur) {
		i = page_of(p, (uint64_t)p->cur);
		c = frag_fit(p->pg[i].frag, a->cpp, n);
	}
	if (c < 0) { /* a new current page */
		int64_t off = nta_pool_alloc_page(p, flags);
		if (off < 0)
			return off;
		i = page_of(p, (uint64_t)off);
		struct pp_page *r = &p->pg[i];
		if (!r->frag && !(r->frag = calloc(1, sizeof(*r->frag)))) {
			nta_pool_put(p, (uint64_t)off, NTA_POOL_DIRECT);
			return -ENOMEM;
		}
		memset(r->frag->used, 0, sizeof(r->frag->used));
		memset(r->frag->start, 0, sizeof(r->frag->start));
		memset(r->frag->deferred, 0, sizeof(r->frag->deferred));
		r->state = PP_FRAG;
		r->current = 1; /* its reference from alloc_page is the "current" one */
		frag_page_drop(p, true);
		p->cur = off;
		c = 0;
	}
	struct pp_page *r = &p->pg[i];
	range_set(r->frag->used, (uint32_t)c, (uint32_t)c + n);
	bit_set(r->frag->start, (uint32_t)c);
	r->frag->ref[c] = 1;
	r->ref++;
	p->st.fragments.frags++;
	p->st.fragments.frag_bytes += (uint64_t)n << a->chunk_shift;
	uint64_t foff = off_of(p, i) + ((uint64_t)c << a->chunk_shift);
	set_live(p, foff);
	return (int64_t)foff;
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

/* Which record, and which fragment, does off name? */
static int resolve(const struct nta_pool *p, uint64_t off, uint32_t *page, int *chunk)
{
	const struct nta_arena *a = p->a;
	uint64_t data_off = (uint64_t)a->gpage0 << a->page_shift;

	if (off < data_off || off >= data_off + ((uint64_t)p->npg << a->page_shift) || (off & a->chunk_mask))
		return -EINVAL;
	uint32_t i = page_of(p, off);
	const struct pp_page *r = &p->pg[i];
	*page = i;
	*chunk = -1;
	switch (r->state) {
	case PP_PAGE:
	case PP_LARGE:
		return off == off_of(p, i) ? 0 : -ENOENT;
	case PP_FRAG: {
		uint32_t c = (uint32_t)((off - off_of(p, i)) >> a->chunk_shift);
		if (!bit_test(r->frag->start, c))
			return bit_test(r->frag->used, c) ? -ENOENT : -EALREADY;
		*chunk = (int)c;
		return 0;
	}
	case PP_NONE:
		return -ENOENT;
	default: /* in the cache, the ring, or waiting for its destructor: nobody holds it */
		return off == off_of(p, i) ? -EALREADY : -ENOENT;
	}
}

/* resolve(), and refuse what nobody holds (a deferred free only waits for a reader). */
static int held(const struct nta_pool *p, uint64_t off, uint32_t *page, int *chunk)
{
	int err = resolve(p, off, page, chunk);

	if (err)
		return err;
	const struct pp_page *r = &p->pg[*page];
	if (r->ref == 0 || (*chunk < 0 && r->deferred) || (*chunk >= 0 && !r->frag->ref[*chunk]))
		return -EALREADY;
	return 0;
}

NTA_API int nta_pool_get(struct nta_pool *p, uint64_t off)
{
	uint32_t i;
	int c, err = held(p, off, &i, &c);

	if (err)
		return err;
	struct pp_page *r = &p->pg[i];
	if (c >= 0) {
		if (r->frag->ref[c] == UINT16_MAX)
			return -EOVERFLOW;
		r->frag->ref[c]++;
	}
	r->ref++;
	return 0;
}

/* Chunks of the fragment starting at c: up to the next start or free chunk. */
static uint32_t frag_len(const struct pp_frag *f, uint32_t c, uint32_t cpp)
{
	uint32_t e = c + 1;

	while (e < cpp && bit_test(f->used, e) && !bit_test(f->start, e))
		e++;
	return e - c;
}

/* Free the chunks of the fragment at chunk c of page i (its last holder is gone). */
static void frag_free(struct nta_pool *p, uint32_t i, uint32_t c)
{
	struct pp_frag *f = p->pg[i].frag;
	uint32_t e = c + frag_len(f, c, p->a->cpp);

	range_clear(f->used, c, e);
	bit_clear(f->start, c);
	p->st.fragments.frags--;
	p->st.fragments.frag_bytes -= (uint64_t)(e - c) << p->a->chunk_shift;
}

NTA_API int nta_pool_put(struct nta_pool *p, uint64_t off, unsigned flags)
{
	uint32_t i;
	int c, err = held(p, off, &i, &c);

	if (err)
		return err;
	struct pp_page *r = &p->pg[i];
	if (c >= 0) {
		if (--r->frag->ref[c]) { /* other holders of the fragment remain, so of the page too */
			r->ref--;
			return 0;
		}
		if (defer_if_pinned(p, off)) { /* the pin holds the page's reference for now */
			bit_set(r->frag->deferred, (uint32_t)c);
			p->st.fragments.frags--;
			p->st.fragments.frag_bytes -= (uint64_t)frag_len(r->frag, (uint32_t)c, p->a->cpp) << p->a->chunk_shift;
			return 0;
		}
		frag_free(p, i, (uint32_t)c);
	} else if (r->ref == 1 && defer_if_pinned(p, off)) {
		r->deferred = 1;
		return 0;
	}
	if (--r->ref == 0)
		page_unused(p, i, flags & NTA_POOL_DIRECT);
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
		if (r->state == PP_FRAG) {
			uint32_t c = (uint32_t)((off - off_of(p, i)) >> p->a->chunk_shift);
			bit_clear(r->frag->deferred, c);
			p->st.fragments.frags++; /* frag_free counts it out again */
			p->st.fragments.frag_bytes += (uint64_t)frag_len(r->frag, c, p->a->cpp) << p->a->chunk_shift;
			frag_free(p, i, c);
		} else {
			r->deferred = 0;
		}
		if (--r->ref == 0)
			page_unused(p, i, false);
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

NTA_API int nta_pool_put_remote(struct nta_pool *p, uint64_t off)
{
	int err = 0;

	pthread_mutex_lock(&p->remote_lock);
	if (p->nremote == p->remote_cap) {
		size_t cap = p->remote_cap ? p->remote_cap * 2 : 256;
		int64_t *nr = realloc(p->remote, cap * sizeof(*nr));
		if (!nr)
			err = -ENOMEM;
		else {
			p->remote = nr;
			p->remote_cap = cap;
		}
	}
	if (!err)
		p->remote[p->nremote++] = (int64_t)off;
	pthread_mutex_unlock(&p->remote_lock);
	return err;
}

NTA_API long nta_pool_drain_remote(struct nta_pool *p)
{
	int64_t *batch;
	size_t n;

	pthread_mutex_lock(&p->remote_lock);
	batch = p->remote;
	n = p->nremote;
	p->remote = NULL;
	p->nremote = p->remote_cap = 0;
	pthread_mutex_unlock(&p->remote_lock);
	for (size_t k = 0; k < n; k++)
		nta_pool_put(p, (uint64_t)batch[k], 0); /* not the fast context: the ring */
	free(batch);
	return (long)n;
}

/* -- destructors ------------------------------------------------------------------ */

NTA_API int nta_pool_set_dtor(struct nta_pool *p, nta_pool_dtor_fn fn, void *ctx)
{
	p->dtor = fn;
	p->dtor_ctx = ctx;
	return 0;
}

NTA_API long nta_pool_dtor_take(struct nta_pool *p, int64_t *pages, size_t n)
{
	size_t k = n < p->npending ? n : p->npending;

	memcpy(pages, p->pending, k * sizeof(*pages));
	memmove(p->pending, p->pending + k, (p->npending - k) * sizeof(*pages));
	p->npending -= k;
	return (long)k;
}

NTA_API int nta_pool_dtor_complete(struct nta_pool *p, const int64_t *pages, const int32_t *verdicts, size_t n)
{
	for (size_t k = 0; k < n; k++) { /* check all before changing any */
		uint32_t i;
		int c;
		if (resolve(p, (uint64_t)pages[k], &i, &c) != -EALREADY && p->pg[i].state != PP_LARGE)
			return -ENOENT;
		if ((p->pg[i].state != PP_PENDING && p->pg[i].state != PP_LARGE) || p->pg[i].ref != 0 ||
		    verdicts[k] < NTA_DTOR_RECYCLE || verdicts[k] > NTA_DTOR_RELEASE)
			return -EINVAL;
	}
	for (size_t k = 0; k < n; k++) {
		uint32_t i = page_of(p, (uint64_t)pages[k]);
		struct pp_page *r = &p->pg[i];
		if (r->state == PP_PENDING)
			r->state = PP_PAGE;
		p->st.destructor.dtor_pending--;
		p->st.destructor.dtor_calls++;
		apply_verdict(p, i, verdicts[k], true);
	}
	return 0;
}

/* -- life cycle --------------------------------------------------------------------- */

NTA_API struct nta_pool *nta_pool_create(struct nta_arena *a, const struct nta_pool_config *cfg)
{
	struct nta_pool *p;
	struct nta_pool_config c = cfg ? *cfg : (struct nta_pool_config){ 0 };

	if (!a || !a->writable || a->kind != NTA_KIND_NTA) {
		errno = EINVAL;
		return NULL;
	}
	c.cache_size = c.cache_size ? c.cache_size : 128;
	c.refill = c.refill ? c.refill : 64;
	c.ring_size = c.ring_size ? c.ring_size : 1024;
	if (c.ring_size & (c.ring_size - 1) || c.refill > c.cache_size || c.cache_size > (1u << 20) ||
	    c.ring_size > (1u << 24)) {
		errno = EINVAL;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->a = a;
	p->cfg = c;
	p->npg = a->h->max_pages;
	p->pg = calloc(p->npg, sizeof(*p->pg));
	p->cache = calloc(c.cache_size, sizeof(*p->cache));
	p->ring = calloc(c.ring_size, sizeof(*p->ring));
	p->ring_mask = c.ring_size - 1;
	p->light_fences = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
	for (int i = 0; i < NTA_MAX_POOLS && !p->pub; i++) { /* a slot to publish in (the owner's only) */
		struct nta_pool_pub *pub = &a->rd->pools[i];
		if (!pub->info.pid) {
			memset(&pub->info, 0, sizeof(pub->info));
			pub->info.ifindex = c.ifindex;
			pub->info.queue = c.queue;
			__atomic_store_n(&pub->info.pid, (uint32_t)getpid(), __ATOMIC_RELEASE);
			p->pub = pub;
		}
	}
	if (!p->pg || !p->cache || !p->ring || pthread_mutex_init(&p->remote_lock, NULL)) {
		free(p->pg);
		free(p->cache);
		free(p->ring);
		free(p);
		errno = ENOMEM;
		return NULL;
	}
	return p;
}

static void empty_caches(struct nta_pool *p)
{
	while (p->cache_len)
		page_to_arena(p, page_of(p, (uint64_t)p->cache[--p->cache_len]));
	while (ring_count(p))
		page_to_arena(p, page_of(p, (uint64_t)p->ring[p->ring_tail++ & p->ring_mask]));
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
		frag_page_drop(p, false);
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
			publish(p);
			return -EBUSY;
		}
		struct timespec nap = { 0, 1000000 };
		nanosleep(&nap, NULL);
	}
	for (uint32_t i = 0; i < p->npg; i++)
		free(p->pg[i].frag);
	if (p->pub)
		__atomic_store_n(&p->pub->info.pid, 0, __ATOMIC_RELEASE);
	pthread_mutex_destroy(&p->remote_lock);
	free(p->pg);
	free(p->cache);
	free(p->ring);
	free(p->pending);
	free(p->remote);
	free(p->deferred);
	free(p);
	if (count)
		*count = 0;
	return 0;
}

static void snapshot(const struct nta_pool *p, struct nta_pool_stats *st)
{
	*st = p->st;
	st->pages.inflight = p->st.pages.hold - p->st.pages.release;
	st->pages.cache_len = p->cache_len;
	st->pages.ring_len = ring_count(p);
}

/* Copy the counters to our slot in the arena (a sequence lock: readers retry). */
static void publish(struct nta_pool *p)
{
	struct nta_pool_pub *pub = p->pub;

	if (!pub)
		return;
	__atomic_store_n(&pub->seq, pub->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	snapshot(p, &pub->info.st);
	__atomic_store_n(&pub->seq, pub->seq + 1, __ATOMIC_RELEASE);
}

NTA_API int nta_pool_stats(const struct nta_pool *p, struct nta_pool_stats *st)
{
	snapshot(p, st);
	publish((struct nta_pool *)p);
	return 0;
}

NTA_API long nta_arena_pools(const struct nta_arena *a, struct nta_pool_info *out, size_t n)
{
	size_t k = 0;

	for (int i = 0; i < NTA_MAX_POOLS && k < n; i++) {
		const struct nta_pool_pub *pub = &a->rd->pools[i];
		uint32_t s0, s1;
		do {
			s0 = __atomic_load_n(&pub->seq, __ATOMIC_ACQUIRE);
			out[k] = pub->info;
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			s1 = __atomic_load_n(&pub->seq, __ATOMIC_RELAXED);
		} while ((s0 & 1) || s0 != s1);
		if (out[k].pid)
			k++;
	}
	return (long)k;
}

NTA_API long nta_pool_page_map(const struct nta_pool *p, uint8_t *map, size_t npages)
{
	const struct nta_arena *a = p->a;
	long n = nta_page_map(a, map, npages);

	if (n < 0)
		return n;
	for (uint32_t i = 0; i < npages; i++) {
		const struct pp_page *r = &p->pg[i];
		uint8_t *row = map + (size_t)i * a->cpp;
		switch (r->state) {
		case PP_NONE:
			break; /* as the arena sees it */
		case PP_CACHE:
		case PP_RING:
		case PP_PENDING:
			memset(row, NTA_CELL_CACHED, a->cpp);
			break;
		case PP_PAGE:
			memset(row, r->deferred ? NTA_CELL_CACHED : NTA_CELL_USED, a->cpp);
			break;
		case PP_LARGE:
			memset(row, NTA_CELL_LARGE, (size_t)a->cpp * (i + r->npages <= npages ? r->npages : npages - i));
			break;
		case PP_FRAG: {
			uint8_t cell = NTA_CELL_FREE;
			for (uint32_t c = 0; c < a->cpp; c++) {
				if (!bit_test(r->frag->used, c))
					cell = NTA_CELL_FREE;
				else if (bit_test(r->frag->start, c))
					cell = bit_test(r->frag->deferred, c) ? NTA_CELL_CACHED : NTA_CELL_USED;
				row[c] = cell;
			}
			break;
		}
		}
	}
	return n;
}

/* -- checking --------------------------------------------------------------------------- */

static int bad(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -EUCLEAN;
}

NTA_API int nta_pool_check(const struct nta_pool *p, char *why, size_t len)
{
	const struct nta_arena *a = p->a;
	uint64_t held = 0, in_use = 0, frags = 0, frag_bytes = 0, reserve = 0, cached = 0, ringed = 0, pend = 0;
	uint64_t deferred = 0;

	if (why && len)
		why[0] = 0;
	for (uint32_t k = 0; k < p->cache_len; k++)
		if (p->pg[page_of(p, (uint64_t)p->cache[k])].state != PP_CACHE)
			return bad(why, len, "cache entry %u is not a cached page", k);
	for (uint32_t k = p->ring_tail; k != p->ring_head; k++)
		if (p->pg[page_of(p, (uint64_t)p->ring[k & p->ring_mask])].state != PP_RING)
			return bad(why, len, "ring entry %u is not a ring page", k);
	for (uint32_t i = 0; i < p->npg; i++) {
		const struct pp_page *r = &p->pg[i];
		uint32_t n = r->state == PP_LARGE ? r->npages : 1;
		if (r->state == PP_NONE)
			continue;
		held += n;
		reserve += r->reserve ? n : 0;
		if (a->desc[i].kind == PG_FREE || a->desc[i].kind == PG_UNTOUCHED)
			return bad(why, len, "pool page %u is free in the arena", i);
		switch (r->state) {
		case PP_CACHE:
			cached++;
			break;
		case PP_RING:
			ringed++;
			break;
		case PP_PENDING:
			pend++;
			break;
		case PP_PAGE:
			if (!r->ref || (r->deferred && r->ref != 1))
				return bad(why, len, "page %u handed out with %u holders%s", i, r->ref,
					   r->deferred ? ", deferred" : "");
			deferred += r->deferred;
			in_use++;
			break;
		case PP_LARGE:
			if (r->ref)
				in_use += n;
			else
				pend++;
			deferred += r->deferred;
			break;
		case PP_FRAG: {
			uint32_t sum = r->current;
			for (uint32_t c = 0; c < a->cpp; c++) {
				bool s = bit_test(r->frag->start, c), u = bit_test(r->frag->used, c);
				bool d = bit_test(r->frag->deferred, c);
				if (s != (r->frag->ref[c] != 0 || d) || (s && !u) || (d && r->frag->ref[c]))
					return bad(why, len, "fragment page %u chunk %u: start %d used %d deferred %d refs %u",
						   i, c, s, u, d, r->frag->ref[c]);
				uint8_t live = a->live[((uint64_t)i * a->cpp) + c];
				if (s && live != !d)
					return bad(why, len, "fragment page %u chunk %u: live byte %u", i, c, live);
				if (d) {
					deferred++;
					sum++;
				}
				if (s) {
					if (!d) { /* a live fragment (a deferred one is counted apart) */
						uint32_t e = c + 1;
						while (e < a->cpp && bit_test(r->frag->used, e) && !bit_test(r->frag->start, e))
							e++;
						frags++;
						frag_bytes += (uint64_t)(e - c) << a->chunk_shift;
					}
				} else if (u && (c == 0 || !bit_test(r->frag->used, c - 1))) {
					return bad(why, len, "fragment page %u chunk %u: used, in no fragment", i, c);
				}
				sum += r->frag->ref[c];
			}
			if (sum != r->ref)
				return bad(why, len, "fragment page %u: refcount %u, its holders %u", i, r->ref, sum);
			if ((r->current != 0) != (p->cur == (int64_t)off_of(p, i)))
				return bad(why, len, "fragment page %u: current flag is wrong", i);
			in_use++;
			break;
		}
		}
	}
#define SAME(name, v)                                                                                        \
	if (p->st.name != (v))                                                                               \
		return bad(why, len, "counter " #name " is %llu, the pool holds %llu",                      \
			   (unsigned long long)p->st.name, (unsigned long long)(v))
	SAME(pages.pages_in_use, in_use);
	SAME(fragments.frags, frags);
	SAME(fragments.frag_bytes, frag_bytes);
	SAME(pages.reserve_pages, reserve);
	SAME(destructor.dtor_pending, pend);
	SAME(fragments.pinned, deferred);
#undef SAME
	if (p->st.pages.hold - p->st.pages.release != held)
		return bad(why, len, "hold - release is %llu, the pool holds %llu pages",
			   (unsigned long long)(p->st.pages.hold - p->st.pages.release), (unsigned long long)held);
	if (cached != p->cache_len || ringed != ring_count(p))
		return bad(why, len, "cache/ring hold %llu/%llu pages, their lengths say %u/%u",
			   (unsigned long long)cached, (unsigned long long)ringed, p->cache_len, ring_count(p));
	if (deferred != p->ndeferred)
		return bad(why, len, "%llu blocks deferred, the list holds %zu", (unsigned long long)deferred,
			   p->ndeferred);
	if (pend != p->npending)
		return bad(why, len, "%llu pages wait for a destructor, the queue holds %zu",
			   (unsigned long long)pend, p->npending);
	return 0;
}
