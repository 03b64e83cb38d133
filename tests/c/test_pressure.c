// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * test_pressure.c - the page pool at the limit, under ASan and UBSan ('make ctest'): a budget of
 * ordinary pages (refused at the cap, idle pages counted against it, what the heap keeps idle given
 * back before an allocation fails), the reserve apart from it (only for NTA_F_RESERVE, only once
 * ordinary memory is out, never into the cache or ring, every page taken given back), and the checker
 * that proves it, for each of the pool's allocators. nta_pool_check() and nta_check() after every step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "nta.h"
#include "pool_internal.h" /* to break the pfmemalloc rule by hand: the checker must see it */

#define CLEAN() EXPECT_CLEAN(p, a)

static const char *const names[] = { "nta", "slab", "ppfrag", "page" };

static struct nta_pool_stats pst(struct nta_pool *p)
{
	struct nta_pool_stats s;
	nta_pool_stats(p, &s);
	return s;
}

static struct nta_arena *arena(uint32_t pages, uint32_t reserve)
{
	struct nta_config cfg = { .max_pages = pages, .reserve_pages = reserve };
	struct nta_arena *a = nta_arena_create(NULL, &cfg);
	if (!a) {
		perror("arena");
		exit(2);
	}
	return a;
}

static struct nta_pool *pool(struct nta_arena *a, uint32_t allocator, uint32_t budget)
{
	struct nta_pool_config c = { .cache_size = 8, .refill = 4, .ring_size = 8, .allocator = allocator,
				     .budget = budget };
	struct nta_pool *p = nta_pool_create(a, &c);
	if (!p) {
		perror("pool");
		exit(2);
	}
	return p;
}

static void destroy(struct nta_pool *p)
{
	size_t n = 99;
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, &n), 0);
	EXPECT_EQ(n, 0);
}

/* Up to max fragments of size until one fails; how many, the failure in *err. */
static int fill(struct nta_pool *p, size_t size, unsigned flags, int64_t *offs, int max, int64_t *err)
{
	int n = 0;

	while (n < max && (offs[n] = nta_pool_alloc_frag(p, size, flags)) > 0)
		n++;
	*err = n < max ? offs[n] : 0;
	return n;
}

static void put_all(struct nta_pool *p, const int64_t *offs, int n)
{
	for (int i = 0; i < n; i++)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)offs[i], NTA_POOL_DIRECT), 0);
}

/* At the cap an allocation fails; the pool holds no more than its budget, idle pages included; a page
 * let go makes room again. */
static void test_budget(uint32_t al)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, al, 6);
	int64_t offs[64], err;
	const int per_page = al == NTA_POOL_NTA ? 2 : al == NTA_POOL_PAGE ? 1 : 2; /* 1,514 bytes: 48 chunks */
	int n = fill(p, 1514, 0, offs, 64, &err);

	EXPECT_EQ(err, -ENOMEM);
	EXPECT_EQ(n, 6 * per_page);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(s.budget.budget_pages, 6);
	EXPECT_EQ(s.budget.budget_held, 6);
	EXPECT_EQ(s.budget.budget_peak, 6);
	EXPECT_EQ(s.budget.budget_refused, 1);
	EXPECT_EQ(s.alloc.alloc_fails, 1);
	EXPECT_EQ(s.reserve.reserve_allocs + s.reserve.reserve_taken, 0); /* not asked for the reserve: it is not touched */
	CLEAN();
	/* the reserve flag without a reserve: the same failure, counted as the reserve exhausted */
	EXPECT_EQ(nta_pool_alloc_frag(p, 1514, NTA_F_RESERVE), -ENOMEM);
	EXPECT_EQ(pst(p).reserve.reserve_exhausted, 1);
	/* a page let go (into the cache: idle, still held, still counted) serves the next one */
	put_all(p, offs + n - per_page, per_page);
	EXPECT_EQ(pst(p).budget.budget_held, 6);
	offs[n - 1] = nta_pool_alloc_frag(p, 1514, 0);
	EXPECT(offs[n - 1] > 0);
	EXPECT_EQ(pst(p).budget.budget_held, 6);
	CLEAN();
	put_all(p, offs, n - per_page);
	put_all(p, offs + n - 1, 1);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)nta_pool_alloc_frag(p, 64, 0), 0), 0);
	destroy(p);
	nta_arena_close(a);
}

/* The budget counts idle pages: with all of it idle in the cache and ring, whole pages still come (from
 * there), but a block of several contiguous pages needs the idle ones given back first. */
static void test_budget_large(uint32_t al)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, al, 4);
	int64_t pg[4];

	for (int i = 0; i < 4; i++)
		EXPECT((pg[i] = nta_pool_alloc_page(p, 0)) > 0);
	EXPECT_EQ(nta_pool_alloc_page(p, 0), -ENOMEM);
	put_all(p, pg, 4); /* all four idle in the cache */
	EXPECT_EQ(pst(p).pages.cache_len, 4);
	int64_t big = nta_pool_alloc_frag(p, 9000, 0); /* three pages (slab: four) */
	EXPECT(big > 0);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(s.budget.budget_reclaims, 1);
	EXPECT(s.budget.budget_held <= 4);
	CLEAN();
	EXPECT_EQ(nta_pool_alloc_frag(p, 9000, 0), -ENOMEM); /* no room even with nothing idle */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)big, 0), 0);
	CLEAN();
	destroy(p);
	nta_arena_close(a);
}

/* Slab keeps an empty slab a class; at the budget that slab is given back before an allocation of
 * another class fails. */
static void test_budget_reclaims_slab(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, NTA_POOL_SLAB, 2);
	int64_t small = nta_pool_alloc_frag(p, 64, 0), big = nta_pool_alloc_frag(p, 2000, 0);

	EXPECT(small > 0 && big > 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)small, NTA_POOL_DIRECT), 0); /* its slab is kept, empty */
	EXPECT_EQ(pst(p).pages.pages_in_use, 2);
	int64_t mid = nta_pool_alloc_frag(p, 1000, 0);
	EXPECT(mid > 0);
	EXPECT_EQ(pst(p).budget.budget_reclaims, 1);
	EXPECT_EQ(pst(p).budget.budget_refused, 1); /* the first request for a page, before the reclaim */
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)mid, 0), 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)big, 0), 0);
	destroy(p);
	nta_arena_close(a);
}

/* The reserve: only with NTA_F_RESERVE and only once ordinary memory is out; every page taken goes back
 * to the reserve (never to the cache or ring) the moment its last fragment does; bean counted. */
static void test_reserve(uint32_t al)
{
	struct nta_arena *a = arena(32, 4);
	struct nta_pool *p = pool(a, al, 4);
	int64_t ord[64], res[64], err;
	int n = fill(p, 1000, 0, ord, 64, &err);
	struct nta_pool_stats s = pst(p);

	EXPECT_EQ(err, -ENOMEM);
	EXPECT_EQ(s.reserve.reserve_taken, 0);
	EXPECT_EQ(s.reserve.reserve_min_free, 4);
	/* ordinary memory out: a permitted allocation takes the reserve */
	int r = fill(p, 1000, NTA_F_RESERVE, res, 64, &err);
	EXPECT_EQ(err, -ENOMEM);
	s = pst(p);
	EXPECT(r >= 4);
	EXPECT_EQ(s.reserve.reserve_allocs, r);
	EXPECT_EQ(s.reserve.reserve_exhausted, 1);
	EXPECT_EQ(s.reserve.reserve_taken, 4);
	EXPECT_EQ(s.reserve.reserve_peak, 4);
	EXPECT_EQ(s.reserve.reserve_min_free, 0);
	EXPECT_EQ(s.pages.reserve_pages, 4);
	EXPECT_EQ(s.budget.budget_held, 4); /* the reserve is apart from the budget */
	CLEAN();
	/* ordinary fragments let go: their room goes to the next allocation, permitted or not, before the
	 * reserve does */
	put_all(p, ord, n);
	int64_t again = nta_pool_alloc_frag(p, 1000, NTA_F_RESERVE);
	EXPECT(again > 0);
	EXPECT_EQ(pst(p).reserve.reserve_allocs, r); /* ordinary first */
	/* the reserve's fragments let go: each page back to the reserve with its last one */
	put_all(p, res, r);
	s = pst(p);
	EXPECT_EQ(s.reserve.reserve_returned, 4);
	EXPECT_EQ(s.pages.reserve_pages, 0);
	EXPECT_EQ(s.pages.cache_len + s.pages.ring_len + s.pages.pages_in_use, s.budget.budget_held);
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)again, 0), 0);
	CLEAN();
	destroy(p);
	nta_arena_close(a);
}

/* The checker proves the pfmemalloc rule: a reserve page moved into the cache by hand is found. */
static void test_checker_sees_a_reserve_page_cached(void)
{
	struct nta_arena *a = arena(16, 2);
	struct nta_pool *p = pool(a, NTA_POOL_PAGE, 2);
	int64_t x = nta_pool_alloc_page(p, 0), y = nta_pool_alloc_page(p, 0), r = nta_pool_alloc_page(p, NTA_F_RESERVE);
	char why[256];

	EXPECT(x > 0 && y > 0 && r > 0);
	CLEAN();
	uint32_t i = page_of(p, (uint64_t)r); /* recycle it as an ordinary page would be, breaking the rule */
	*live_byte(p, (uint64_t)r) = 0;
	p->pg[i].state = PP_CACHE;
	p->cache[p->cache_len++] = r;
	p->st.pages.pages_in_use--;
	EXPECT_EQ(nta_pool_check(p, why, sizeof(why)), -EUCLEAN);
	EXPECT(strstr(why, "reserve page") && strstr(why, "cache"));
	/* mended: its holder back, then let go the right way */
	p->cache_len--;
	p->pg[i].state = PP_PAGE;
	p->st.pages.pages_in_use++;
	*live_byte(p, (uint64_t)r) = 1;
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)r, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).pages.cache_len, 0);
	put_all(p, (int64_t[]){ x, y }, 2);
	destroy(p);
	nta_arena_close(a);
}

/* A seeded random walk at the limit: fragments of packet sizes, some permitted the reserve, let go in
 * random order; after every step the checkers, and the budget and the reserve's books. */
static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void test_random(uint32_t al, int steps)
{
	static const uint32_t sizes[] = { 64, 200, 576, 1000, 1514, 3000, 5000 };
	struct nta_arena *a = arena(128, 6);
	struct nta_pool *p = pool(a, al, 10);
	enum { MAX = 200 };
	int64_t off[MAX];
	int live = 0, fails = 0, reserved = 0;

	for (int s = 0; s < steps && failures < 20; s++) {
		uint64_t x = next();
		if (live < MAX && x % 3) {
			unsigned flags = x & 8 ? NTA_F_RESERVE : 0;
			uint64_t before = pst(p).reserve.reserve_allocs;
			int64_t o = nta_pool_alloc_frag(p, sizes[(x >> 8) % 7], flags);
			if (o > 0) {
				off[live++] = o;
				reserved += pst(p).reserve.reserve_allocs != before;
			} else {
				EXPECT_EQ(o, -ENOMEM);
				fails++;
			}
			if (!flags)
				EXPECT_EQ(pst(p).reserve.reserve_allocs, before); /* never without permission */
		} else if (live) {
			int k = (int)((x >> 16) % (uint64_t)live);
			EXPECT_EQ(nta_pool_put(p, (uint64_t)off[k], x & 16 ? NTA_POOL_DIRECT : 0), 0);
			off[k] = off[--live];
		}
		struct nta_pool_stats st = pst(p);
		EXPECT(st.budget.budget_held <= 10);
		EXPECT(st.pages.reserve_pages <= 6);
		if (s % 7 == 0)
			CLEAN();
	}
	put_all(p, off, live);
	struct nta_pool_stats st = pst(p);
	EXPECT(fails > 0 && reserved > 0); /* it did reach the limit, and the reserve was used */
	EXPECT_EQ(st.reserve.reserve_taken, st.reserve.reserve_returned);
	EXPECT_EQ(st.pages.reserve_pages, 0);
	CLEAN();
	destroy(p);
	nta_arena_close(a);
	if (failures)
		fprintf(stderr, "  (random walk of %s)\n", names[al]);
}

int main(void)
{
	for (uint32_t al = NTA_POOL_NTA; al <= NTA_POOL_PAGE; al++) {
		test_budget(al);
		test_budget_large(al);
		test_reserve(al);
		test_random(al, 6000);
	}
	test_budget_reclaims_slab();
	test_checker_sees_a_reserve_page_cached();
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
