// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * check.c - nta_check(): walk every page, list and counter of an arena and
 * prove they agree. Slow (linear in the arena) and read-only; the tests run
 * it after every step.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "nta_internal.h"

struct ck {
	char *why;
	size_t len;
	int err;
};

static bool fail(struct ck *k, const char *fmt, ...)
{
	va_list ap;

	if (!k->err) {
		k->err = -EUCLEAN;
		if (k->why && k->len) {
			va_start(ap, fmt);
			vsnprintf(k->why, k->len, fmt, ap);
			va_end(ap);
		}
	}
	return false;
}

#define CHECK(k, cond, ...) ((cond) ? true : fail((k), __VA_ARGS__))

struct totals {
	uint64_t pages_in_use, reserve_pages, small_pages, large_pages, committed;
	uint64_t free_chunks, cached, live, handed, regions, runs;
};

/* A small (NTA) page: bitmaps consistent, every free region a linked node. */
static bool check_small(const struct nta_arena *a, struct ck *k, uint32_t p, struct totals *t)
{
	const struct nta_hdr *h = a->h;
	const struct nta_page *d = pg(a, p);
	const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START);
	const uint64_t *cached = bmp(a, p, BMP_CACHED);
	uint32_t cpp = h->cpp, nfree = 0, blocks = 0;

	for (uint32_t w = 0; w < h->words; w++) {
		if (!CHECK(k, !(start[w] & ~used[w]), "page %u: start bits outside used chunks", p))
			return false;
		if (!CHECK(k, !(cached[w] & ~start[w]), "page %u: cached bits outside block starts", p))
			return false;
	}
	for (uint32_t c = 0; c < cpp;) {
		if (!bit_test(used, c)) {
			uint32_t e = bit_next_set(used, c, cpp);
			const struct nta_node *nd = node(a, gchunk(a, p, c));
			if (!CHECK(k, nd->magic == NTA_NODE_MAGIC && nd->nchunks == e - c,
				   "page %u chunk %u: free region of %u chunks has node magic %#x, length %u",
				   p, c, e - c, nd->magic, nd->nchunks))
				return false;
			nfree += e - c;
			t->regions++;
			c = e;
			continue;
		}
		if (!CHECK(k, bit_test(start, c), "page %u chunk %u: used chunk outside any block", p, c))
			return false;
		uint32_t e = c + 1;
		while (e < cpp && bit_test(used, e) && !bit_test(start, e))
			e++;
		blocks++;
		if (bit_test(cached, c)) {
			t->cached++;
		} else {
			t->live++;
			t->handed += (uint64_t)(e - c) << h->chunk_shift;
		}
		c = e;
	}
	if (!CHECK(k, nfree == d->nfree && blocks == d->live,
		   "page %u: %u free chunks and %u blocks, descriptor says %u and %u",
		   p, nfree, blocks, d->nfree, d->live))
		return false;
	if (!CHECK(k, blocks > 0, "page %u: a small page with no blocks was not given back", p))
		return false;
	t->free_chunks += nfree;
	t->small_pages++;
	return true;
}

static bool check_slab(const struct nta_arena *a, struct ck *k, uint32_t p, struct totals *t)
{
	const struct nta_hdr *h = a->h;
	const struct nta_page *d = pg(a, p);
	uint32_t kk = d->cls, per = 1u << (kk - h->chunk_shift), objs = h->page_size >> kk, nfree = 0;
	const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START);

	for (uint32_t i = d->aux; i; i = *(const uint32_t *)(a->base + page_off(a, p) + ((uint64_t)(i - 1) << kk))) {
		if (!CHECK(k, i <= objs && nfree < objs, "slab %u: free list runs out of the page", p))
			return false;
		if (!CHECK(k, !range_any(used, (i - 1) * per, i * per), "slab %u: free object %u is marked used",
			   p, i - 1))
			return false;
		nfree++;
	}
	uint32_t live = 0;
	for (uint32_t i = 0; i < objs; i++) {
		if (!bit_test(used, i * per))
			continue;
		if (!CHECK(k, bit_test(start, i * per) && range_all(used, i * per, (i + 1) * per),
			   "slab %u: object %u partly marked", p, i))
			return false;
		live++;
	}
	if (!CHECK(k, nfree == d->nfree && live == d->live && live + nfree == objs,
		   "slab %u: %u free and %u live of %u objects, descriptor says %u and %u",
		   p, nfree, live, objs, d->nfree, d->live))
		return false;
	if (!CHECK(k, live > 0, "slab %u: an empty slab was not given back", p))
		return false;
	t->live += live;
	t->handed += (uint64_t)live << kk;
	t->small_pages++;
	return true;
}

static bool check_pages(const struct nta_arena *a, struct ck *k, struct totals *t)
{
	const struct nta_hdr *h = a->h;

	for (uint32_t p = h->top; p < h->max_pages; p++)
		if (!CHECK(k, pg(a, p)->kind == PG_UNTOUCHED, "page %u above top %u is not untouched", p, h->top))
			return false;
	for (uint32_t p = 0; p < h->top;) {
		const struct nta_page *d = pg(a, p);
		if (!(d->flags & PG_DECOMMITTED))
			t->committed++;
		if (d->kind != PG_FREE && !CHECK(k, !(d->flags & PG_DECOMMITTED), "page %u in use is decommitted", p))
			return false;
		if (d->kind != PG_FREE) {
			t->pages_in_use++;
			if (d->flags & PG_RESERVE)
				t->reserve_pages++;
		}
		switch (d->kind) {
		case PG_FREE: {
			uint32_t run = d->run;
			if (!CHECK(k, run >= 1 && p + run <= h->top && pg(a, p + run - 1)->run == run,
				   "free run at page %u: bad length %u", p, run))
				return false;
			for (uint32_t i = p + 1; i < p + run; i++) {
				if (!CHECK(k, pg(a, i)->kind == PG_FREE, "free run at page %u: page %u is not free", p, i))
					return false;
				if (!(pg(a, i)->flags & PG_DECOMMITTED))
					t->committed++;
			}
			if (!CHECK(k, p + run == h->top || pg(a, p + run)->kind != PG_FREE,
				   "free runs at pages %u and %u were not combined", p, p + run))
				return false;
			t->runs++;
			p += run;
			continue;
		}
		case PG_SMALL:
			if (!CHECK(k, h->kind == NTA_KIND_NTA, "page %u: small page in a pow2 arena", p) ||
			    !check_small(a, k, p, t))
				return false;
			break;
		case PG_SLAB:
			if (!CHECK(k, h->kind == NTA_KIND_POW2, "page %u: slab in an NTA arena", p) ||
			    !check_slab(a, k, p, t))
				return false;
			break;
		case PG_LARGE: {
			uint32_t run = d->run;
			if (!CHECK(k, run >= 1 && p + run <= h->top, "large block at page %u: bad length %u", p, run))
				return false;
			for (uint32_t i = p + 1; i < p + run; i++) {
				const struct nta_page *e = pg(a, i);
				if (!CHECK(k, e->kind == PG_LARGE_TAIL && (e->flags & PG_RESERVE) == (d->flags & PG_RESERVE),
					   "large block at page %u: page %u is not its tail", p, i))
					return false;
				t->pages_in_use++;
				if (e->flags & PG_RESERVE)
					t->reserve_pages++;
				if (!(e->flags & PG_DECOMMITTED))
					t->committed++;
			}
			t->large_pages += run;
			t->live++;
			t->handed += (uint64_t)run << h->page_shift;
			p += run;
			continue;
		}
		default:
			return fail(k, "page %u below top has kind %u", p, d->kind);
		}
		p++;
	}
	return true;
}

/* Every list: links consistent, every member what its list says. */
static bool check_lists(const struct nta_arena *a, struct ck *k, const struct totals *t)
{
	const struct nta_hdr *h = a->h;
	uint64_t regions = 0, runs = 0, cached = 0;

	for (int pool = 0; pool < 2; pool++) {
		const struct nta_classes *P = &h->pool[pool];
		for (uint32_t n = 0; n <= h->cpp && h->kind == NTA_KIND_NTA; n++) {
			bool nonempty = (P->nonempty[n >> 6] >> (n & 63)) & 1;
			if (!CHECK(k, nonempty == (P->heads[n] != 0), "pool %d: class %u non-empty bit is wrong", pool, n))
				return false;
			uint32_t prev = 0;
			for (uint32_t g = P->heads[n]; g; g = node(a, g)->next) {
				uint32_t p = gchunk_page(a, g), c = gchunk_index(a, g);
				const struct nta_page *d = pg(a, p);
				if (!CHECK(k, p < h->top && d->kind == PG_SMALL && !!(d->flags & PG_RESERVE) == pool,
					   "pool %d class %u: region at page %u is not in a small page of this pool",
					   pool, n, p))
					return false;
				const struct nta_node *nd = node(a, g);
				if (!CHECK(k, nd->magic == NTA_NODE_MAGIC && nd->nchunks == n && nd->prev == prev,
					   "pool %d class %u: region at page %u chunk %u has a bad node", pool, n, p, c))
					return false;
				if (!CHECK(k, (c == 0 || bit_test(bmp(a, p, BMP_USED), c - 1)) &&
						      !range_any(bmp(a, p, BMP_USED), c, c + n) &&
						      (c + n == h->cpp || bit_test(bmp(a, p, BMP_USED), c + n)),
					   "pool %d class %u: region at page %u chunk %u is not a maximal free run",
					   pool, n, p, c))
					return false;
				if (!CHECK(k, ++regions <= t->regions, "free lists hold more regions than the pages"))
					return false;
				prev = g;
			}
		}
	}
	if (!CHECK(k, regions == t->regions, "free lists hold %llu regions, the pages %llu",
		   (unsigned long long)regions, (unsigned long long)t->regions))
		return false;
	for (uint32_t c = 0; c < NTA_RUN_CLASSES; c++) {
		bool nonempty = (h->run_nonempty[c >> 6] >> (c & 63)) & 1;
		if (!CHECK(k, nonempty == (h->run_heads[c] != 0), "page-run class %u non-empty bit is wrong", c))
			return false;
		uint32_t prev = 0;
		for (uint32_t q = h->run_heads[c]; q; q = pg(a, q - 1)->next) {
			const struct nta_page *d = pg(a, q - 1);
			if (!CHECK(k, q - 1 < h->top && d->kind == PG_FREE && nta_run_class(d->run) == c && d->prev == prev,
				   "page-run class %u: page %u is a bad member", c, q - 1))
				return false;
			if (!CHECK(k, ++runs <= t->runs, "page-run lists hold more runs than the arena"))
				return false;
			prev = q;
		}
	}
	if (!CHECK(k, runs == t->runs, "page-run lists hold %llu runs, the arena %llu",
		   (unsigned long long)runs, (unsigned long long)t->runs))
		return false;
	for (uint32_t n = 0; n <= h->cpp && h->cache_depth; n++) {
		if (!CHECK(k, h->cache_count[n] <= h->cache_depth && (n || !h->cache_count[n]),
			   "cache of %u-chunk blocks holds %u", n, h->cache_count[n]))
			return false;
		for (uint32_t i = 0; i < h->cache_count[n]; i++) {
			uint32_t g = cache_slot(a, n)[i], p = gchunk_page(a, g), c = gchunk_index(a, g);
			if (!CHECK(k, p < h->top && pg(a, p)->kind == PG_SMALL && !(pg(a, p)->flags & PG_RESERVE) &&
					      bit_test(bmp(a, p, BMP_CACHED), c),
				   "cache of %u-chunk blocks: entry %u is not a cached block", n, i))
				return false;
			/* exactly n chunks long */
			uint32_t e = c + 1;
			while (e < h->cpp && bit_test(bmp(a, p, BMP_USED), e) && !bit_test(bmp(a, p, BMP_START), e))
				e++;
			if (!CHECK(k, e - c == n, "cache of %u-chunk blocks: entry %u is %u chunks long", n, i, e - c))
				return false;
			cached++;
		}
	}
	if (!CHECK(k, cached == t->cached, "caches hold %llu blocks, the bitmaps mark %llu",
		   (unsigned long long)cached, (unsigned long long)t->cached))
		return false;
	return true;
}

static bool check_slab_lists(const struct nta_arena *a, struct ck *k)
{
	const struct nta_hdr *h = a->h;

	for (int pool = 0; pool < 2 && h->kind == NTA_KIND_POW2; pool++)
		for (uint32_t ci = 0; ci < NTA_POW2_CLASSES; ci++) {
			uint32_t prev = 0, steps = 0;
			for (uint32_t q = h->pool[pool].slabs[ci]; q; q = pg(a, q - 1)->next) {
				const struct nta_page *d = pg(a, q - 1);
				if (!CHECK(k, q - 1 < h->top && d->kind == PG_SLAB && d->cls == ci + h->chunk_shift &&
						      d->nfree > 0 && d->prev == prev && !!(d->flags & PG_RESERVE) == pool &&
						      ++steps <= h->top,
					   "pool %d slab class %u: page %u is a bad member", pool, ci, q - 1))
					return false;
				prev = q;
			}
		}
	return true;
}

#define SAME(k, field, value) \
	CHECK(k, h->st.field == (value), "counter " #field " is %llu, the arena holds %llu", \
	      (unsigned long long)h->st.field, (unsigned long long)(value))

NTA_API int nta_check(const struct nta_arena *a, char *why, size_t whylen)
{
	const struct nta_hdr *h = a->h;
	struct ck k = { .why = why, .len = whylen };
	struct totals t = { 0 };

	if (why && whylen)
		why[0] = 0;
	if (check_pages(a, &k, &t) && check_lists(a, &k, &t) && check_slab_lists(a, &k) &&
	    SAME(&k, pages_in_use, t.pages_in_use) && SAME(&k, reserve_pages_in_use, t.reserve_pages) &&
	    SAME(&k, small_pages, t.small_pages) && SAME(&k, large_pages, t.large_pages) &&
	    SAME(&k, pages_committed, t.committed) && SAME(&k, free_chunks, t.free_chunks) &&
	    CHECK(&k, h->st.allocs - h->st.frees == t.live, "counter live_allocs is %llu, the arena holds %llu",
		  (unsigned long long)(h->st.allocs - h->st.frees), (unsigned long long)t.live) &&
	    SAME(&k, bytes_handed, t.handed) &&
	    CHECK(&k, h->st.reserve_pages_in_use <= h->reserve_pages, "reserve over its budget") &&
	    CHECK(&k, h->st.pages_in_use - h->st.reserve_pages_in_use <= h->max_pages - h->reserve_pages,
		  "ordinary pages over their budget"))
		return 0;
	return k.err;
}
