// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool.c - the page pool's benchmarks, in the shapes of the kernel's
 * lib/bench_page_pool_simple.c, each timed in a tight loop:
 *
 *   fast_path  alloc a page, put it back in the owner's context (alloc cache)
 *   ptr_ring   alloc a page, put it back outside it (recycle ring; the alloc
 *              cache refills from the ring, `refill` pages at a time)
 *   slow       alloc a page, release it to the arena (no recycling: every
 *              allocation takes a page from the arena, maps and unmaps it)
 *   frag       alloc an IMIX-sized fragment, put it back (placed by ALLOCATOR:
 *              nta, slab, ppfrag or page; default nta)
 *
 *   poolbench MODE LOOPS REPEATS [ALLOCATOR]  ->  one line of JSON: ns per alloc+put, per repeat
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nta.h"

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int release_all(void *ctx, struct nta_pool *p, uint64_t page)
{
	(void)ctx;
	(void)p;
	(void)page;
	return NTA_DTOR_RELEASE;
}

int main(int argc, char **argv)
{
	static const char *const allocators[] = { [NTA_POOL_NTA] = "nta", [NTA_POOL_SLAB] = "slab",
						  [NTA_POOL_PPFRAG] = "ppfrag", [NTA_POOL_PAGE] = "page" };
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: %s fast_path|ptr_ring|slow|frag LOOPS REPEATS [nta|slab|ppfrag|page]\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1];
	long loops = atol(argv[2]);
	int repeats = atoi(argv[3]);
	struct nta_config cfg = { .max_pages = 4096 };
	struct nta_arena *a = nta_arena_create(NULL, &cfg);
	struct nta_pool_config pc = { 0 };
	int direct = 1;

	for (pc.allocator = 0; argc == 5 && pc.allocator <= NTA_POOL_PAGE; pc.allocator++)
		if (!strcmp(argv[4], allocators[pc.allocator]))
			break;
	if (pc.allocator > NTA_POOL_PAGE) {
		fprintf(stderr, "poolbench: unknown allocator %s\n", argv[4]);
		return 2;
	}

	if (!strcmp(mode, "slow"))
		pc.refill = 1; /* one page from the arena per allocation, no bulk */
	struct nta_pool *p = a ? nta_pool_create(a, &pc) : NULL;
	if (!p) {
		perror("poolbench");
		return 1;
	}
	if (!strcmp(mode, "ptr_ring"))
		direct = 0;
	else if (!strcmp(mode, "slow"))
		nta_pool_set_dtor(p, release_all, NULL);
	else if (strcmp(mode, "fast_path") && strcmp(mode, "frag")) {
		fprintf(stderr, "poolbench: unknown mode %s\n", mode);
		return 2;
	}
	int frag = !strcmp(mode, "frag");
	static const uint32_t imix[12] = { 64, 576, 64, 1500, 64, 576, 64, 64, 576, 64, 576, 64 };

	printf("{\"mode\": \"%s\", \"allocator\": \"%s\", \"loops\": %ld, \"ns_per_op\": [", mode,
	       allocators[pc.allocator], loops);
	for (int r = 0; r < repeats + 1; r++) { /* the first round warms up */
		double t0 = now_ns();
		for (long i = 0; i < loops; i++) {
			int64_t off = frag ? nta_pool_alloc_frag(p, imix[i % 12], 0) : nta_pool_alloc_page(p, 0);
			if (__builtin_expect(off <= 0, 0) || nta_pool_put(p, (uint64_t)off, direct ? NTA_POOL_DIRECT : 0)) {
				fprintf(stderr, "poolbench: %s failed at %ld\n", mode, i);
				return 1;
			}
		}
		double ns = (now_ns() - t0) / loops;
		if (r)
			printf("%s%.3f", r > 1 ? ", " : "", ns);
	}
	struct nta_pool_stats s;
	nta_pool_stats(p, &s);
	printf("], \"stats\": {\"fast\": %llu, \"slow\": %llu, \"refill\": %llu, \"cached\": %llu, \"ring\": %llu, "
	       "\"maps\": %llu, \"unmaps\": %llu}}\n",
	       (unsigned long long)s.alloc.fast, (unsigned long long)s.alloc.slow, (unsigned long long)s.alloc.refill,
	       (unsigned long long)s.recycle.cached, (unsigned long long)s.recycle.ring, (unsigned long long)s.pages.maps,
	       (unsigned long long)s.pages.unmaps);
	char why[256];
	if (nta_pool_check(p, why, sizeof(why))) {
		fprintf(stderr, "poolbench: %s\n", why);
		return 1;
	}
	size_t n;
	nta_pool_destroy(p, 0, NULL, 0, &n);
	nta_arena_close(a);
	return 0;
}
