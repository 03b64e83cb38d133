// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * check.c - nta_check(): walk every page, heap, list and counter of an arena
 * and prove they agree. Slow (linear in the arena) and read-only; the tests
 * run it after every step.
 *
 * What it proves, beside the page runs: every page in use belongs to exactly
 * one heap that is open and of the page's kind, with the heap's reserve flag;
 * in a heap's pages every used chunk is in exactly one block and every free
 * region is a linked node of that heap's lists (NTA), every free object is
 * on its slab's list (pow2), a carved page is empty above its cursor
 * (ppfrag); every parked block is in that heap's cache; and each heap's
 * counters, the front door's and the arena's totals match what the pages
 * hold. (That a pool's live blocks are held, and its idle pages in its cache
 * or ring, is nta_pool_check's.)
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "nta_small.h"

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

struct heap_totals {
	uint64_t pages, live, handed, free_chunks, cached, regions, large_live, large_pages;
	uint64_t cached_live, cached_handed; /* of live and handed, the parked blocks */
};

struct totals {
	uint64_t pages_in_use, reserve_pages, small_pages, large_pages, committed, free_chunks, runs;
	struct heap_totals heap[NTA_MAX_HEAPS];
};

/* Blocks of a page of small blocks (NTA or carved): every used chunk in one block, starts on used chunks;
 * counts its free chunks, its blocks and the parked ones. */
static bool check_blocks(const struct nta_arena *a, struct ck *k, uint32_t p, uint32_t *nfree, uint32_t *blocks,
			 uint32_t *parked, struct heap_totals *t)
{
	const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START), *cached = bmp(a, p, BMP_CACHED);
	uint32_t cpp = a->cpp;

	*nfree = *blocks = *parked = 0;
	for (uint32_t w = 0; w < a->words; w++) {
		if (!CHECK(k, !(start[w] & ~used[w]), "page %u: start bits outside used chunks", p))
			return false;
		if (!CHECK(k, !(cached[w] & ~start[w]), "page %u: cached bits outside block starts", p))
			return false;
	}
	for (uint32_t c = 0; c < cpp;) {
		if (!bit_test(used, c)) {
			uint32_t e = bit_next_set(used, c, cpp);
			*nfree += e - c;
			c = e;
			continue;
		}
		if (!CHECK(k, bit_test(start, c), "page %u chunk %u: used chunk outside any block", p, c))
			return false;
		uint32_t e = nta_block_end(a, p, c);
		(*blocks)++;
		if (bit_test(cached, c)) {
			(*parked)++;
			t->cached_live++;
			t->cached_handed += (uint64_t)(e - c) << a->chunk_shift;
		}
		t->live++; /* a heap counts the blocks taken from it, parked or not */
		t->handed += (uint64_t)(e - c) << a->chunk_shift;
		c = e;
	}
	return true;
}

/* An NTA page: its blocks, and every free region a linked node. */
static bool check_small(const struct nta_arena *a, struct ck *k, uint32_t p, struct heap_totals *t)
{
	const struct nta_page *d = pg(a, p);
	const uint64_t *used = bmp(a, p, BMP_USED);
	uint32_t nfree, blocks, parked;

	if (!check_blocks(a, k, p, &nfree, &blocks, &parked, t))
		return false;
	for (uint32_t c = 0; c < a->cpp;) {
		if (bit_test(used, c)) {
			c++;
			continue;
		}
		uint32_t e = bit_next_set(used, c, a->cpp);
		const struct nta_node *nd = node(a, gchunk(a, p, c));
		if (!CHECK(k, nd->magic == NTA_NODE_MAGIC && nd->nchunks == e - c,
			   "page %u chunk %u: free region of %u chunks has node magic %#x, length %u",
			   p, c, e - c, nd->magic, nd->nchunks))
			return false;
		t->regions++;
		c = e;
	}
	const uint32_t counted = heap_counts_parked(d->heap) ? parked : 0;
	if (!CHECK(k, nfree == d->nfree && blocks == d->live && counted == d->aux,
		   "page %u: %u free chunks, %u blocks, %u parked; descriptor says %u, %u and %u",
		   p, nfree, blocks, counted, d->nfree, d->live, d->aux))
		return false;
	bool kept = nta_heap_keeps(a, d->heap); /* a pool's ordinary heap keeps its last page */
	if (!CHECK(k, blocks > 0 || kept, "page %u: a small page with no blocks was not given back", p))
		return false;
	if (!CHECK(k, !a->feed[d->heap].put || parked < blocks || kept,
		   "page %u: a pool's page holds only parked blocks (%u)", p, parked))
		return false;
	t->free_chunks += nfree;
	t->cached += parked;
	return true;
}

/* A carved page (ppfrag): blocks in carving order; above the current page's cursor, nothing. */
static bool check_carve(const struct nta_arena *a, struct ck *k, uint32_t p, struct heap_totals *t)
{
	const struct nta_page *d = pg(a, p);
	const struct nta_heap *hp = &a->heaps[d->heap];
	uint32_t nfree, blocks, parked;

	if (!check_blocks(a, k, p, &nfree, &blocks, &parked, t))
		return false;
	if (!CHECK(k, nfree == d->nfree && blocks == d->live && !parked,
		   "carved page %u: %u free chunks, %u blocks, %u parked; descriptor says %u and %u",
		   p, nfree, blocks, parked, d->nfree, d->live))
		return false;
	if (hp->cur == p + 1) {
		if (!CHECK(k, hp->cursor <= a->cpp && !range_any(bmp(a, p, BMP_USED), hp->cursor, a->cpp),
			   "carved page %u: chunks above its cursor %u are in use", p, hp->cursor))
			return false;
		if (!CHECK(k, blocks > 0 || nta_heap_keeps_idle(a, d->heap),
			   "carved page %u: a reserve heap's current page holds nothing, and was not given back", p))
			return false;
	} else if (!CHECK(k, blocks > 0, "carved page %u: no fragment left, and not given back", p)) {
		return false;
	}
	t->free_chunks += nfree;
	return true;
}

static bool check_slab(const struct nta_arena *a, struct ck *k, uint32_t p, struct heap_totals *t)
{
	const struct nta_page *d = pg(a, p);
	uint32_t kk = d->cls, per = 1u << (kk - a->chunk_shift), objs = a->page_size >> kk, nfree = 0;
	const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START);

	if (!CHECK(k, kk >= a->chunk_shift && kk <= a->page_shift, "slab %u: object class %u", p, kk))
		return false;
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
	/* a pool's ordinary heap may keep one empty slab a class (check_lists counts them) */
	if (!CHECK(k, live > 0 || nta_heap_keeps_idle(a, d->heap), "slab %u: an empty slab was not given back", p))
		return false;
	t->live += live;
	t->handed += (uint64_t)live << kk;
	return true;
}

/* The page's heap: open, of this kind of page, with the page's reserve flag. */
static bool check_owner(const struct nta_arena *a, struct ck *k, uint32_t p)
{
	const struct nta_page *d = pg(a, p);
	const struct nta_heap *hp;
	static const uint32_t kind_of[] = { [PG_SMALL] = HEAP_NTA, [PG_SLAB] = HEAP_SLAB, [PG_CARVE] = HEAP_PPFRAG };

	if (!CHECK(k, d->heap < NTA_MAX_HEAPS, "page %u: heap %u does not exist", p, d->heap))
		return false;
	hp = &a->heaps[d->heap];
	if (!CHECK(k, hp->kind != HEAP_NONE, "page %u belongs to heap %u, which is not open", p, d->heap))
		return false;
	if (!CHECK(k, !!(d->flags & PG_RESERVE) == !!(hp->flags & HEAP_RESERVE),
		   "page %u: reserve flag %d, its heap %u's %d", p, !!(d->flags & PG_RESERVE), d->heap,
		   !!(hp->flags & HEAP_RESERVE)))
		return false;
	if (d->kind == PG_SMALL || d->kind == PG_SLAB || d->kind == PG_CARVE)
		return CHECK(k, hp->kind == kind_of[d->kind], "page %u of kind %u in heap %u of kind %u", p, d->kind,
			     d->heap, hp->kind);
	if (d->kind == PG_POOL)
		return CHECK(k, d->heap >= 2, "page %u: a pool's page in the arena's heap %u", p, d->heap);
	return true;
}

static bool check_pages(const struct nta_arena *a, struct ck *k, struct totals *t)
{
	for (uint32_t p = nta_top(a); p < a->max_pages; p++)
		if (!CHECK(k, pg(a, p)->kind == PG_UNTOUCHED, "page %u above top %u is not untouched", p, nta_top(a)))
			return false;
	for (uint32_t p = 0; p < nta_top(a);) {
		const struct nta_page *d = pg(a, p);
		struct heap_totals *ht = &t->heap[d->heap < NTA_MAX_HEAPS ? d->heap : 0];
		if (!(d->flags & PG_DECOMMITTED))
			t->committed++;
		if (d->kind != PG_FREE && !CHECK(k, !(d->flags & PG_DECOMMITTED), "page %u in use is decommitted", p))
			return false;
		if (d->kind != PG_FREE) {
			t->pages_in_use++;
			if (d->flags & PG_RESERVE)
				t->reserve_pages++;
			if (!check_owner(a, k, p))
				return false;
		}
		switch (d->kind) {
		case PG_FREE: {
			uint32_t run = d->run;
			if (!CHECK(k, run >= 1 && p + run <= nta_top(a) && pg(a, p + run - 1)->run == run,
				   "free run at page %u: bad length %u", p, run))
				return false;
			for (uint32_t i = p + 1; i < p + run; i++) {
				if (!CHECK(k, pg(a, i)->kind == PG_FREE, "free run at page %u: page %u is not free", p, i))
					return false;
				if (!(pg(a, i)->flags & PG_DECOMMITTED))
					t->committed++;
			}
			if (!CHECK(k, p + run == nta_top(a) || pg(a, p + run)->kind != PG_FREE,
				   "free runs at pages %u and %u were not combined", p, p + run))
				return false;
			t->runs++;
			p += run;
			continue;
		}
		case PG_SMALL:
		case PG_SLAB:
		case PG_CARVE:
			if (!(d->kind == PG_SMALL ? check_small(a, k, p, ht) : d->kind == PG_SLAB ? check_slab(a, k, p, ht)
											: check_carve(a, k, p, ht)))
				return false;
			ht->pages++;
			t->small_pages++;
			break;
		case PG_POOL:
			break;
		case PG_LARGE: {
			uint32_t run = d->run;
			if (!CHECK(k, run >= 1 && p + run <= nta_top(a), "large block at page %u: bad length %u", p, run))
				return false;
			for (uint32_t i = p + 1; i < p + run; i++) {
				const struct nta_page *e = pg(a, i);
				if (!CHECK(k, e->kind == PG_LARGE_TAIL && e->heap == d->heap &&
						      (e->flags & PG_RESERVE) == (d->flags & PG_RESERVE),
					   "large block at page %u: page %u is not its tail", p, i))
					return false;
				t->pages_in_use++;
				if (e->flags & PG_RESERVE)
					t->reserve_pages++;
				if (!(e->flags & PG_DECOMMITTED))
					t->committed++;
			}
			t->large_pages += run;
			ht->large_live++;
			ht->large_pages += run;
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

/* Heap h's lists: links consistent, every member what its list says and in a page of this heap. */
static bool check_lists(const struct nta_arena *a, struct ck *k, uint32_t h, const struct heap_totals *t)
{
	const struct nta_heap *hp = &a->heaps[h];
	const struct nta_classes *L = &hp->lists;
	uint64_t regions = 0;

	for (uint32_t n = 0; n <= a->cpp; n++) {
		bool nonempty = (L->nonempty[n >> 6] >> (n & 63)) & 1;
		if (!CHECK(k, nonempty == (L->heads[n] != 0), "heap %u: class %u non-empty bit is wrong", h, n))
			return false;
		if (!CHECK(k, hp->kind == HEAP_NTA || !L->heads[n], "heap %u of kind %u has free regions", h, hp->kind))
			return false;
		uint32_t prev = 0;
		for (uint32_t g = L->heads[n]; g; g = node(a, g)->next) {
			uint32_t p = gchunk_page(a, g), c = gchunk_index(a, g);
			const struct nta_page *d = pg(a, p);
			if (!CHECK(k, p < nta_top(a) && d->kind == PG_SMALL && d->heap == h,
				   "heap %u class %u: region at page %u is not in a small page of this heap", h, n, p))
				return false;
			const struct nta_node *nd = node(a, g);
			if (!CHECK(k, nd->magic == NTA_NODE_MAGIC && nd->nchunks == n && nd->prev == prev,
				   "heap %u class %u: region at page %u chunk %u has a bad node", h, n, p, c))
				return false;
			if (!CHECK(k, (c == 0 || bit_test(bmp(a, p, BMP_USED), c - 1)) &&
					      !range_any(bmp(a, p, BMP_USED), c, c + n) &&
					      (c + n == a->cpp || bit_test(bmp(a, p, BMP_USED), c + n)),
				   "heap %u class %u: region at page %u chunk %u is not a maximal free run", h, n, p, c))
				return false;
			if (!CHECK(k, ++regions <= t->regions, "heap %u: free lists hold more regions than its pages", h))
				return false;
			prev = g;
		}
	}
	if (!CHECK(k, regions == t->regions, "heap %u: free lists hold %llu regions, its pages %llu", h,
		   (unsigned long long)regions, (unsigned long long)t->regions))
		return false;
	uint64_t cached = 0;
	for (uint32_t n = 0; n <= a->cpp && a->depth; n++) {
		uint32_t count = __atomic_load_n(&hp->cache_count[n], __ATOMIC_RELAXED); /* once: it may change */
		if (!CHECK(k, count <= hp->cache_limit && count <= a->depth && (n || !count) &&
				      (hp->kind == HEAP_NTA || !count),
			   "heap %u: cache of %u-chunk blocks holds %u", h, n, count))
			return false;
		for (uint32_t i = 0; i < count; i++) {
			uint32_t g = *cache_at(a, h, n, i), p = gchunk_page(a, g), c = gchunk_index(a, g);
			if (!CHECK(k, p < nta_top(a) && pg(a, p)->kind == PG_SMALL && pg(a, p)->heap == h &&
					      bit_test(bmp(a, p, BMP_CACHED), c),
				   "heap %u: cache of %u-chunk blocks: entry %u is not a parked block of it", h, n, i))
				return false;
			if (!CHECK(k, nta_block_end(a, p, c) - c == n, "heap %u: cache of %u-chunk blocks: entry %u is %u "
				   "chunks long", h, n, i, nta_block_end(a, p, c) - c))
				return false;
			cached++;
		}
	}
	if (!CHECK(k, cached == t->cached, "heap %u: its cache holds %llu blocks, its pages mark %llu", h,
		   (unsigned long long)cached, (unsigned long long)t->cached))
		return false;
	if (!CHECK(k, hp->parked == cached, "heap %u: its cache holds %llu blocks, its count says %u", h,
		   (unsigned long long)cached, hp->parked))
		return false;
	for (uint32_t ci = 0; ci < NTA_POW2_CLASSES; ci++) {
		uint32_t prev = 0, steps = 0, empty = 0;
		if (!CHECK(k, hp->kind == HEAP_SLAB || !L->slabs[ci], "heap %u of kind %u has slabs", h, hp->kind))
			return false;
		for (uint32_t q = L->slabs[ci]; q; q = pg(a, q - 1)->next) {
			const struct nta_page *d = pg(a, q - 1);
			if (!CHECK(k, q - 1 < nta_top(a) && d->kind == PG_SLAB && d->heap == h &&
					      d->cls == ci + a->chunk_shift && d->nfree > 0 && d->prev == prev &&
					      ++steps <= nta_top(a),
				   "heap %u slab class %u: page %u is a bad member", h, ci, q - 1))
				return false;
			empty += d->nfree == a->page_size >> d->cls;
			prev = q;
		}
		if (!CHECK(k, empty <= (nta_heap_keeps_idle(a, h) ? 1u : 0u), "heap %u slab class %u: %u empty slabs kept", h, ci,
			   empty))
			return false;
	}
	if (hp->kind == HEAP_PPFRAG && hp->cur) {
		const struct nta_page *d = pg(a, hp->cur - 1);
		if (!CHECK(k, hp->cur - 1 < nta_top(a) && d->kind == PG_CARVE && d->heap == h,
			   "heap %u: its current page %u is not a carved page of it", h, hp->cur - 1))
			return false;
	}
	return true;
}

/* The page-run lists: links consistent, every member a free run of its class. */
static bool check_runs(const struct nta_arena *a, struct ck *k, const struct totals *t)
{
	const struct nta_hdr *h = a->h;
	uint64_t runs = 0;

	for (uint32_t c = 0; c < NTA_RUN_CLASSES; c++) {
		bool nonempty = (h->run_nonempty[c >> 6] >> (c & 63)) & 1;
		if (!CHECK(k, nonempty == (h->run_heads[c] != 0), "page-run class %u non-empty bit is wrong", c))
			return false;
		uint32_t prev = 0;
		for (uint32_t q = h->run_heads[c]; q; q = pg(a, q - 1)->next) {
			const struct nta_page *d = pg(a, q - 1);
			if (!CHECK(k, q - 1 < nta_top(a) && d->kind == PG_FREE && nta_run_class(d->run) == c && d->prev == prev,
				   "page-run class %u: page %u is a bad member", c, q - 1))
				return false;
			if (!CHECK(k, ++runs <= t->runs, "page-run lists hold more runs than the arena"))
				return false;
			prev = q;
		}
	}
	return CHECK(k, runs == t->runs, "page-run lists hold %llu runs, the arena %llu", (unsigned long long)runs,
		     (unsigned long long)t->runs);
}

static bool check_heaps(const struct nta_arena *a, struct ck *k, const struct totals *t)
{
	for (uint32_t h = 0; h < NTA_MAX_HEAPS; h++) {
		const struct nta_heap *hp = &a->heaps[h];
		const struct heap_totals *ht = &t->heap[h];
		if (h <= HEAP_ARENA_RESERVE &&
		    !CHECK(k, hp->kind == a->kind, "heap %u is of kind %u, the arena's %u", h, hp->kind, a->kind))
			return false;
		uint32_t limit = hp->kind == HEAP_NTA && !(hp->flags & HEAP_RESERVE) ? a->depth : 0;
		if (!CHECK(k, hp->cache_limit == limit, "heap %u: cache limit %u, not %u", h, hp->cache_limit, limit))
			return false;
		if (hp->kind == HEAP_NONE) {
			if (!CHECK(k, !ht->pages && !ht->large_pages && !hp->cur, "heap %u is closed but holds pages", h))
				return false;
			continue;
		}
		if (!check_lists(a, k, h, ht))
			return false;
		if (!CHECK(k, hp->pages == ht->pages && hp->peak_pages >= hp->pages && hp->live == ht->live &&
				      hp->handed == ht->handed && hp->free_chunks == ht->free_chunks,
			   "heap %u: counters say %u pages, %llu live, %llu bytes, %llu free chunks; its pages hold %llu, "
			   "%llu, %llu, %llu", h, hp->pages, (unsigned long long)hp->live, (unsigned long long)hp->handed,
			   (unsigned long long)hp->free_chunks, (unsigned long long)ht->pages, (unsigned long long)ht->live,
			   (unsigned long long)ht->handed, (unsigned long long)ht->free_chunks))
			return false;
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
	struct totals *t = calloc(1, sizeof(*t));
	int err;

	if (why && whylen)
		why[0] = 0;
	if (!t)
		return -ENOMEM;
	const struct heap_totals *f0 = &t->heap[HEAP_ARENA], *f1 = &t->heap[HEAP_ARENA_RESERVE];
	if (check_pages(a, &k, t) && check_runs(a, &k, t) && check_heaps(a, &k, t)) {
		uint64_t free_chunks = 0;
		for (uint32_t i = 0; i < NTA_MAX_HEAPS; i++)
			free_chunks += t->heap[i].free_chunks;
		uint64_t live = f0->live - f0->cached_live + f1->live + f0->large_live + f1->large_live;
		uint64_t handed = f0->handed - f0->cached_handed + f1->handed +
				  ((f0->large_pages + f1->large_pages) << a->page_shift);
		(void)(SAME(&k, pages_in_use, t->pages_in_use) && SAME(&k, reserve_pages_in_use, t->reserve_pages) &&
		       SAME(&k, small_pages, t->small_pages) && SAME(&k, large_pages, t->large_pages) &&
		       SAME(&k, pages_committed, t->committed) && SAME(&k, free_chunks, free_chunks) &&
		       CHECK(&k, h->st.allocs - h->st.frees == live, "counter live_allocs is %llu, the arena holds %llu",
			     (unsigned long long)(h->st.allocs - h->st.frees), (unsigned long long)live) &&
		       SAME(&k, bytes_handed, handed) &&
		       CHECK(&k, h->st.reserve_pages_in_use <= h->reserve_pages, "reserve over its budget") &&
		       CHECK(&k, h->st.pages_in_use - h->st.reserve_pages_in_use <= a->max_pages - h->reserve_pages,
			     "ordinary pages over their budget"));
	}
	err = k.err;
	free(t);
	return err;
}
