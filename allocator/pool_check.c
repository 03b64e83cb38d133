// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_check.c - nta_pool_check(): prove that the pool's pages, its cache,
 * ring, heaps, holders and counters agree with each other and with the
 * arena; and the pool's page map. Slow and read-only (the tests run it
 * after every step).
 *
 * Beside nta_check() (which proves each heap's own books), it proves: every
 * page of the pool's heaps is one the pool knows, in the state the arena's
 * descriptor says; in a page holding fragments every block is held (its live
 * byte counts its holders), pinned by a reader after its last put (on the
 * deferred list), or parked in the heap's size cache; no other chunk has a
 * live byte; an idle page has none, and is never a reserve page (those go back
 * to the reserve, not the cache or ring); what was taken from the reserve
 * and not returned is what the pool holds of it; the ordinary pages held fit
 * the budget. And of the remote queue: every put
 * posted and not yet applied is of a block the pool hands out, with a
 * holder for each put posted for it, and every put taken was applied or
 * refused.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nta_small.h"
#include "pool_internal.h"

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

static int cmp_off(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return (a > b) - (a < b);
}

struct pool_totals {
	uint64_t held, in_use, frags, frag_bytes, reserve, cached, ringed, pend, deferred;
};

/* Is off on the (sorted) deferred list? */
static bool deferred(const int64_t *sorted, size_t n, uint64_t off)
{
	return n && bsearch(&off, sorted, n, sizeof(*sorted), cmp_off);
}

/* A page holding fragments: every block held, pinned or parked; no stray live byte. */
static int check_frag_page(const struct nta_pool *p, uint32_t i, const int64_t *dl, size_t ndl,
			   struct pool_totals *t, char *why, size_t len)
{
	const struct nta_arena *a = p->a;
	const uint64_t *used = bmp(a, i, BMP_USED), *start = bmp(a, i, BMP_START), *cached = bmp(a, i, BMP_CACHED);
	const uint8_t *live = a->live + (size_t)i * a->cpp;

	for (uint32_t c = 0; c < a->cpp; c++) {
		bool s = bit_test(used, c) && bit_test(start, c);
		if (!s || bit_test(cached, c)) {
			if (live[c])
				return bad(why, len, "fragment page %u chunk %u: %u holders, but no block is handed out there",
					   i, c, live[c]);
			continue;
		}
		uint64_t off = off_of(p, i) + ((uint64_t)c << a->chunk_shift);
		bool d = deferred(dl, ndl, off);
		if (!live[c] && !d)
			return bad(why, len, "fragment page %u chunk %u: a block nobody holds, pins or parks", i, c);
		if (live[c] && d)
			return bad(why, len, "fragment page %u chunk %u: held by %u and on the deferred list", i, c, live[c]);
		if (d) {
			t->deferred++;
			continue;
		}
		t->frags++;
		t->frag_bytes += pg(a, i)->kind == PG_SLAB ? 1ull << pg(a, i)->cls
							   : (uint64_t)(nta_block_end(a, i, c) - c) << a->chunk_shift;
	}
	return 0;
}

static int check_remote(const struct nta_pool *p, char *why, size_t len);

NTA_API int nta_pool_check(const struct nta_pool *p, char *why, size_t len)
{
	const struct nta_arena *a = p->a;
	struct pool_totals t = { 0 };
	int64_t *dl = NULL;
	int err = 0;

	if (why && len)
		why[0] = 0;
	for (uint32_t k = 0; k < p->cache_len; k++)
		if (p->pg[page_of(p, (uint64_t)p->cache[k])].state != PP_CACHE)
			return bad(why, len, "cache entry %u is not a cached page", k);
	for (uint32_t k = p->ring_tail; k != p->ring_head; k++)
		if (p->pg[page_of(p, (uint64_t)p->ring[k & p->ring_mask])].state != PP_RING)
			return bad(why, len, "ring entry %u is not a ring page", k);
	if (p->ndeferred) {
		if (!(dl = malloc(p->ndeferred * sizeof(*dl))))
			return -ENOMEM;
		memcpy(dl, p->deferred, p->ndeferred * sizeof(*dl));
		qsort(dl, p->ndeferred, sizeof(*dl), cmp_off);
	}
	for (uint32_t i = 0; i < a->h->top && !err; i++) { /* every page of our heaps is one we know */
		const struct nta_page *d = pg(a, i);
		if (d->kind != PG_FREE && d->kind != PG_LARGE_TAIL && (d->heap == p->heap || d->heap == p->rheap) &&
		    p->pg[i].state == PP_NONE)
			err = bad(why, len, "page %u of the pool's heap %u is not the pool's", i, d->heap);
	}
	for (uint32_t i = 0; i < p->npg && !err; i++) {
		const struct pp_page *r = &p->pg[i];
		const struct nta_page *d = pg(a, i);
		uint32_t n = pp_pages(r);
		uint8_t live0 = a->live[(size_t)i * a->cpp];
		uint64_t off = off_of(p, i);
		if (r->state == PP_NONE)
			continue;
		t.held += n;
		t.reserve += r->reserve ? n : 0;
		if (i >= a->h->top || (d->heap != p->heap && d->heap != p->rheap)) {
			err = bad(why, len, "pool page %u is not in the pool's heaps in the arena (heap %u)", i, d->heap);
			break;
		}
		if (!!r->reserve != !!(d->flags & PG_RESERVE) || (d->heap == p->rheap) != !!r->reserve) {
			err = bad(why, len, "pool page %u: reserve %u, the arena's flag %u, heap %u", i, r->reserve,
				  !!(d->flags & PG_RESERVE), d->heap);
			break;
		}
		bool whole = n > 1 ? d->kind == PG_LARGE && d->run == n : d->kind == PG_POOL;
		switch (r->state) {
		case PP_CACHE:
		case PP_RING:
		case PP_PENDING:
			t.cached += r->state == PP_CACHE;
			t.ringed += r->state == PP_RING;
			t.pend += r->state == PP_PENDING;
			if (!whole || live0)
				err = bad(why, len, "idle pool page %u: arena kind %u, %u holders", i, d->kind, live0);
			else if (r->reserve && r->state != PP_PENDING) /* the pfmemalloc rule */
				err = bad(why, len, "reserve page %u is in the pool's %s", i,
					  r->state == PP_CACHE ? "cache" : "ring");
			break;
		case PP_PAGE:
		case PP_LARGE:
			if (!whole || (r->state == PP_LARGE) != (n > 1)) {
				err = bad(why, len, "pool page %u handed out whole: arena kind %u, %u pages", i, d->kind, n);
				break;
			}
			t.in_use += n;
			if (!live0 && deferred(dl, p->ndeferred, off)) {
				t.deferred++;
			} else if (!live0) {
				err = bad(why, len, "page %u handed out, nobody holds or pins it", i);
			} else if (r->frag) {
				t.frags++;
				t.frag_bytes += (uint64_t)n << a->page_shift;
			}
			break;
		case PP_FRAG:
			if (d->kind != PG_SMALL && d->kind != PG_SLAB && d->kind != PG_CARVE) {
				err = bad(why, len, "fragment page %u: arena kind %u", i, d->kind);
				break;
			}
			t.in_use++;
			err = check_frag_page(p, i, dl, p->ndeferred, &t, why, len);
			break;
		default:
			err = bad(why, len, "pool page %u: state %u", i, r->state);
		}
	}
	free(dl);
	if (err)
		return err;
#define SAME(name, v)                                                                                        \
	if (p->st.name != (v))                                                                               \
		return bad(why, len, "counter " #name " is %llu, the pool holds %llu",                      \
			   (unsigned long long)p->st.name, (unsigned long long)(v))
	SAME(pages.pages_in_use, t.in_use);
	SAME(fragments.frags, t.frags);
	SAME(fragments.frag_bytes, t.frag_bytes);
	SAME(pages.reserve_pages, t.reserve);
	SAME(destructor.dtor_pending, t.pend);
	SAME(fragments.pinned, t.deferred);
#undef SAME
	if (p->st.pages.hold - p->st.pages.release != t.held)
		return bad(why, len, "hold - release is %llu, the pool holds %llu pages",
			   (unsigned long long)(p->st.pages.hold - p->st.pages.release), (unsigned long long)t.held);
	if (t.cached != p->cache_len || t.ringed != ring_count(p))
		return bad(why, len, "cache/ring hold %llu/%llu pages, their lengths say %u/%u",
			   (unsigned long long)t.cached, (unsigned long long)t.ringed, p->cache_len, ring_count(p));
	if (t.deferred != p->ndeferred)
		return bad(why, len, "%llu blocks deferred, the list holds %zu", (unsigned long long)t.deferred,
			   p->ndeferred);
	if (t.pend != p->npending)
		return bad(why, len, "%llu pages wait for a destructor, the queue holds %zu", (unsigned long long)t.pend,
			   p->npending);
	if (p->st.reserve.reserve_taken - p->st.reserve.reserve_returned != t.reserve || p->st.reserve.reserve_peak < t.reserve)
		return bad(why, len, "reserve: %llu pages taken, %llu returned, peak %llu; the pool holds %llu",
			   (unsigned long long)p->st.reserve.reserve_taken, (unsigned long long)p->st.reserve.reserve_returned,
			   (unsigned long long)p->st.reserve.reserve_peak, (unsigned long long)t.reserve);
	if (p->cfg.budget && t.held - t.reserve > p->cfg.budget)
		return bad(why, len, "the pool holds %llu ordinary pages, over its budget of %u",
			   (unsigned long long)(t.held - t.reserve), p->cfg.budget);
	if (p->st.pages.peak_pages_in_use < p->st.pages.pages_in_use)
		return bad(why, len, "peak pages in use %llu below pages in use %llu",
			   (unsigned long long)p->st.pages.peak_pages_in_use, (unsigned long long)p->st.pages.pages_in_use);
	return check_remote(p, why, len);
}

/* The remote queue (pool_remote.c): what is posted and not yet applied, as far as it is published. */
static int check_remote(const struct nta_pool *p, char *why, size_t len)
{
	const struct nta_arena *a = p->a;
	uint64_t tail = __atomic_load_n(&p->remote_tail, __ATOMIC_ACQUIRE), size = (uint64_t)p->remote_mask + 1;
	size_t n = 0;
	int64_t *offs;
	int err = 0;

	if (p->st.remote.applied + p->st.remote.bad != p->remote_head)
		return bad(why, len, "remote puts: %llu taken, %llu applied + %llu refused",
			   (unsigned long long)p->remote_head, (unsigned long long)p->st.remote.applied,
			   (unsigned long long)p->st.remote.bad);
	if (tail - p->remote_head > size)
		return bad(why, len, "remote queue: %llu posted and not applied, it holds %llu",
			   (unsigned long long)(tail - p->remote_head), (unsigned long long)size);
	if (tail == p->remote_head)
		return 0;
	if (!(offs = malloc((tail - p->remote_head) * sizeof(*offs))))
		return -ENOMEM;
	for (uint64_t pos = p->remote_head; pos < tail; pos++) {
		const struct pool_remote_slot *s = &p->remote[pos & p->remote_mask];
		if (remote_published(s, pos)) /* the rest: being written */
			offs[n++] = (int64_t)remote_off(s);
	}
	qsort(offs, n, sizeof(*offs), cmp_off);
	for (size_t k = 0; k < n && !err;) {
		uint64_t off = (uint64_t)offs[k];
		size_t same = 1;
		while (k + same < n && offs[k + same] == offs[k])
			same++;
		if (off < p->data_off || off >= p->data_end || off & p->cmask) {
			err = bad(why, len, "remote put of %llu: not a block of the pool's pages", (unsigned long long)off);
		} else {
			uint32_t i = page_of(p, off), c = (uint32_t)((off - p->data_off) >> p->cshift) % a->cpp;
			const uint8_t live = *live_byte(p, off);
			if (p->pg[i].state != PP_FRAG && p->pg[i].state != PP_PAGE && p->pg[i].state != PP_LARGE)
				err = bad(why, len, "remote put of %llu: page %u is not handed out", (unsigned long long)off, i);
			else if (p->pg[i].state == PP_FRAG && !bit_test(bmp(a, i, BMP_START), c))
				err = bad(why, len, "remote put of %llu: not the start of a block", (unsigned long long)off);
			else if (live < same)
				err = bad(why, len, "%zu remote puts of %llu posted, it has %u holders", same,
					  (unsigned long long)off, live);
		}
		k += same;
	}
	free(offs);
	return err;
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
		const uint8_t *live = a->live + (size_t)i * a->cpp;
		switch (r->state) {
		case PP_NONE:
			break; /* as the arena sees it */
		case PP_CACHE:
		case PP_RING:
			memset(row, NTA_CELL_CACHED, a->cpp);
			break;
		case PP_PENDING:
			memset(row, NTA_CELL_CACHED, (size_t)a->cpp * (i + r->npages <= npages ? pp_pages(r) : npages - i));
			break;
		case PP_PAGE:
			memset(row, live[0] ? NTA_CELL_USED : NTA_CELL_CACHED, a->cpp);
			break;
		case PP_LARGE:
			memset(row, NTA_CELL_LARGE, (size_t)a->cpp * (i + r->npages <= npages ? r->npages : npages - i));
			break;
		case PP_FRAG: /* the arena's cells (free, used, parked), and a pinned block as idle */
			for (uint32_t c = 0; c < a->cpp; c++) {
				if (row[c] != NTA_CELL_USED || live[c] || !bit_test(bmp(a, i, BMP_START), c))
					continue;
				uint32_t e = nta_block_end(a, i, c);
				memset(row + c, NTA_CELL_CACHED, e - c);
				c = e - 1;
			}
			break;
		}
	}
	return n;
}
