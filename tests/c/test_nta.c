// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * test_nta.c - C unit tests of the arena, the NTA and the pow2 baseline.
 * Built with -fsanitize=address,undefined by 'make ctest'; nta_check() runs
 * after every step that changes an arena.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expect.h"
#include "nta.h"
#include "nta_internal.h" /* white-box: test_check_sees_corruption */

static void clean(struct nta_arena *a, int line)
{
	char why[256];
	int err = nta_check(a, why, sizeof(why));
	checks++;
	if (err) {
		failures++;
		fprintf(stderr, "line %d: nta_check: %s\n", line, why);
	}
}
#define CLEAN(a) clean((a), __LINE__)

static struct nta_arena *mk(uint32_t kind, uint32_t chunk, uint32_t pages, uint32_t reserve, uint32_t cache)
{
	struct nta_config cfg = { .kind = kind, .chunk_size = chunk, .max_pages = pages,
				  .reserve_pages = reserve, .cache_depth = cache };
	struct nta_arena *a = nta_arena_create(NULL, &cfg);
	if (!a) {
		perror("nta_arena_create");
		exit(2);
	}
	return a;
}

static struct nta_stats stats(struct nta_arena *a)
{
	struct nta_stats st;
	nta_stats(a, &st);
	return st;
}

static void test_exact_sizes(void)
{
	struct nta_arena *a = mk(NTA_KIND_NTA, 32, 16, 0, NTA_CACHE_OFF);
	int64_t x = nta_alloc(a, 1, 0), y = nta_alloc(a, 33, 0), z = nta_alloc(a, 1514, 0);

	EXPECT(x > 0 && y > 0 && z > 0);
	EXPECT_EQ(y - x, 32);         /* 1 byte: one chunk */
	EXPECT_EQ(z - y, 64);         /* 33 bytes: two chunks */
	struct nta_stats st = stats(a);
	EXPECT_EQ(st.bytes_handed, 32 + 64 + 1536); /* 1514 -> 48 chunks, not 2048 */
	EXPECT_EQ(st.bytes_requested, 1 + 33 + 1514);
	EXPECT_EQ(st.pages_in_use, 1);
	CLEAN(a);
	EXPECT_EQ(nta_alloc(a, 0, 0), -EINVAL);
	EXPECT_EQ(nta_free(a, (uint64_t)x, 1), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)y, 33), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)z, 1514), 0);
	EXPECT_EQ(stats(a).pages_in_use, 0);
	EXPECT_EQ(stats(a).live_allocs, 0);
	CLEAN(a);
	nta_arena_close(a);
}

static void test_coalescing(void)
{
	struct nta_arena *a = mk(NTA_KIND_NTA, 32, 16, 0, NTA_CACHE_OFF);
	int64_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = nta_alloc(a, 1024, 0); /* 4 x 32 chunks fill one page */
	EXPECT_EQ(stats(a).pages_in_use, 1);
	EXPECT_EQ(nta_free(a, (uint64_t)b[0], 1024), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)b[2], 1024), 0);
	CLEAN(a);
	uint64_t hist[130];
	EXPECT_EQ(nta_free_histogram(a, hist, 130, NULL), 2);
	EXPECT_EQ(hist[32], 2);
	EXPECT_EQ(stats(a).largest_free, 15 * 4096); /* the untouched pages */
	/* freeing the block between them makes one region of 96 chunks */
	EXPECT_EQ(nta_free(a, (uint64_t)b[1], 1024), 0);
	CLEAN(a);
	EXPECT_EQ(nta_free_histogram(a, hist, 130, NULL), 1);
	EXPECT_EQ(hist[96], 1);
	int64_t big = nta_alloc(a, 96 * 32, 0);
	EXPECT_EQ(big, b[0]); /* it fits where the three were */
	EXPECT_EQ(nta_free(a, (uint64_t)big, 96 * 32), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)b[3], 1024), 0);
	EXPECT_EQ(stats(a).pages_in_use, 0); /* the empty page went back */
	CLEAN(a);
	nta_arena_close(a);
}

static void test_checked_frees(uint32_t kind)
{
	struct nta_arena *a = mk(kind, 32, 16, 0, 4);
	int64_t x = nta_alloc(a, 100, 0), y = nta_alloc(a, 100, 0), big = nta_alloc(a, 9000, 0);
	struct nta_stats before = stats(a);

	EXPECT(x > 0 && y > 0 && big > 0);
	EXPECT_EQ(nta_free(a, (uint64_t)x + 32, 100), -ENOENT);  /* inside a block */
	EXPECT_EQ(nta_free(a, (uint64_t)x + 1, 100), -EINVAL);   /* not a chunk */
	EXPECT_EQ(nta_free(a, 8, 100), -EINVAL);                 /* the header */
	EXPECT_EQ(nta_free(a, (uint64_t)before.data_off + 15 * 4096, 100), -EINVAL); /* above top */
	EXPECT_EQ(nta_free(a, (uint64_t)x, 300), -ERANGE);       /* too big */
	EXPECT_EQ(nta_free(a, (uint64_t)x, kind == NTA_KIND_NTA ? 40 : 32), -ERANGE); /* too small */
	EXPECT_EQ(nta_free(a, (uint64_t)big, 100), -ERANGE);
	EXPECT_EQ(nta_free(a, (uint64_t)big + 4096, 9000), -ENOENT); /* the block's second page */
	EXPECT_EQ(nta_free(a, (uint64_t)x, 0), -EINVAL);
	struct nta_stats after = stats(a);
	EXPECT_EQ(after.bad_frees, before.bad_frees + 9);
	after.bad_frees = before.bad_frees;
	EXPECT(memcmp(&before, &after, sizeof(before)) == 0); /* nothing else changed */
	CLEAN(a);
	EXPECT_EQ(nta_free(a, (uint64_t)x, 100), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)x, 100), -EALREADY);    /* twice (cached for the NTA) */
	EXPECT_EQ(nta_free(a, (uint64_t)big, 9000), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)big, 9000), -EALREADY);
	EXPECT_EQ(nta_cache_flush(a), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)x, 100), -EALREADY);    /* twice, truly free */
	CLEAN(a);
	EXPECT_EQ(nta_free(a, (uint64_t)y, 100), 0);
	EXPECT_EQ(stats(a).live_allocs, 0);
	CLEAN(a);
	nta_arena_close(a);
}

static void test_cache(void)
{
	struct nta_arena *a = mk(NTA_KIND_NTA, 32, 16, 0, 2);
	int64_t x = nta_alloc(a, 64, 0), y = nta_alloc(a, 64, 0), z = nta_alloc(a, 64, 0);

	EXPECT_EQ(nta_free(a, (uint64_t)x, 64), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)y, 64), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)z, 64), 0); /* the cache holds 2: this one is combined */
	struct nta_stats st = stats(a);
	EXPECT_EQ(st.cached_blocks, 2);
	EXPECT_EQ(st.live_allocs, 0);
	CLEAN(a);
	EXPECT_EQ(nta_alloc(a, 60, 0), y); /* LIFO */
	EXPECT_EQ(nta_alloc(a, 64, 0), x);
	EXPECT_EQ(stats(a).cache_hits, 2);
	CLEAN(a);
	nta_arena_close(a);
}

static void test_large(uint32_t kind)
{
	struct nta_arena *a = mk(kind, 32, 64, 0, NTA_CACHE_OFF);
	int64_t j = nta_alloc(a, 65536, 0), k = nta_alloc(a, 9000, 0);

	EXPECT(j > 0 && k > 0);
	EXPECT_EQ(j % 4096, stats(a).data_off % 4096);
	EXPECT_EQ(stats(a).large_pages, kind == NTA_KIND_NTA ? 16 + 3 : 16 + 4);
	memset((char *)nta_arena_base(a) + j, 0xab, 65536); /* all of it is ours (ASan would see) */
	CLEAN(a);
	EXPECT_EQ(nta_free(a, (uint64_t)j, 65536), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)k, 9000), 0);
	EXPECT_EQ(stats(a).pages_in_use, 0);
	CLEAN(a);
	/* too big for the arena */
	EXPECT_EQ(nta_alloc(a, 65 * 4096, 0), -ENOMEM);
	nta_arena_close(a);
}

static void test_reserve(uint32_t kind)
{
	struct nta_arena *a = mk(kind, 32, 8, 2, NTA_CACHE_OFF);
	int64_t pages[8], r, s;
	int n = 0;

	while ((pages[n] = nta_alloc(a, 4096, 0)) > 0)
		n++;
	EXPECT_EQ(n, 6); /* max 8, reserve 2 */
	EXPECT_EQ(stats(a).reserve_denied, 1);
	r = nta_alloc(a, 100, NTA_F_RESERVE);
	EXPECT(r > 0);
	EXPECT_EQ(stats(a).reserve_pages_in_use, 1);
	EXPECT_EQ(stats(a).reserve_allocs, 1);
	/* the reserve page has room, but an ordinary allocation may not use it */
	EXPECT_EQ(nta_alloc(a, 100, 0), -ENOMEM);
	CLEAN(a);
	s = nta_alloc(a, 100, NTA_F_RESERVE); /* shares the reserve page */
	EXPECT(s > 0 && (s - r) < 4096 && (s - r) > -4096);
	EXPECT_EQ(stats(a).reserve_pages_in_use, 1);
	/* reserve allocations take ordinary memory first when there is some */
	EXPECT_EQ(nta_free(a, (uint64_t)pages[0], 4096), 0);
	int64_t t = nta_alloc(a, 4096, NTA_F_RESERVE);
	EXPECT_EQ(t, pages[0]);
	EXPECT_EQ(stats(a).reserve_allocs, 2);
	CLEAN(a);
	EXPECT_EQ(nta_free(a, (uint64_t)r, 100), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)s, 100), 0);
	EXPECT_EQ(stats(a).reserve_pages_in_use, 0); /* balanced: all taken was given back */
	CLEAN(a);
	nta_arena_close(a);
}

static void test_trim(void)
{
	struct nta_arena *a = mk(NTA_KIND_NTA, 32, 64, 0, NTA_CACHE_OFF);
	int64_t b[32];

	for (int i = 0; i < 32; i++)
		b[i] = nta_alloc(a, 4000, 0);
	EXPECT_EQ(stats(a).pages_committed, 32);
	for (int i = 0; i < 16; i++)
		nta_free(a, (uint64_t)b[i], 4000);
	EXPECT_EQ(nta_arena_trim(a), 16);
	EXPECT_EQ(stats(a).pages_committed, 16);
	EXPECT_EQ(stats(a).pages_trimmed, 16);
	CLEAN(a);
	EXPECT_EQ(nta_arena_trim(a), 0);
	for (int i = 0; i < 16; i++)
		b[i] = nta_alloc(a, 4000, 0);
	EXPECT_EQ(stats(a).pages_committed, 32);
	CLEAN(a);
	nta_arena_close(a);
}

static void test_attach(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/dev/shm/nta-ctest-%d", getpid());
	struct nta_config cfg = { .max_pages = 32, .flags = NTA_ARENA_UNLINK };
	struct nta_arena *a = nta_arena_create(path, &cfg), *r;

	EXPECT(a != NULL);
	EXPECT(nta_arena_create(path, &cfg) == NULL && errno == EEXIST);
	int64_t x = nta_alloc(a, 11, 0);
	memcpy((char *)nta_arena_base(a) + x, "hello, nta", 11);
	r = nta_arena_attach(path, 0);
	EXPECT(r != NULL);
	EXPECT(strcmp((char *)nta_arena_base(r) + x, "hello, nta") == 0);
	EXPECT_EQ(stats(r).live_allocs, 1);
	EXPECT_EQ(nta_alloc(r, 10, 0), -EROFS);
	EXPECT_EQ(nta_free(r, (uint64_t)x, 11), -EROFS);
	CLEAN(r);
	nta_arena_close(r);
	nta_arena_close(a);
	EXPECT(access(path, F_OK) != 0); /* unlinked by its creator */

	/* not an arena */
	FILE *f = fopen(path, "w");
	fputs("not an arena, not even close", f);
	fclose(f);
	EXPECT(nta_arena_attach(path, 0) == NULL && errno == EBADMSG);
	unlink(path);
	EXPECT(nta_arena_attach(path, 0) == NULL && errno == ENOENT);
}

static void test_bad_configs(void)
{
	struct nta_config bad[] = {
		{ .max_pages = 0 },
		{ .max_pages = 4, .reserve_pages = 4 },
		{ .max_pages = 4, .page_size = 3000 },
		{ .max_pages = 4, .chunk_size = 8 },
		{ .max_pages = 4, .chunk_size = 48 },
		{ .max_pages = 4, .chunk_size = 8192 },
		{ .max_pages = 4, .page_size = 65536, .chunk_size = 16 },
		{ .max_pages = 4, .kind = 9 },
		{ .max_pages = 4, .cache_depth = NTA_CACHE_MAX + 1 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		EXPECT(nta_arena_create(NULL, &bad[i]) == NULL && errno == EINVAL);
	}
}

/* A seeded random walk against a model: every live block, its size and its
 * bytes; nta_check after every step; bad frees mixed in. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void test_random(uint32_t kind, uint32_t chunk, uint32_t pages, uint32_t cache, int steps)
{
	struct nta_arena *a = mk(kind, chunk, pages, 2, cache);
	enum { MAXLIVE = 512 };
	int64_t off[MAXLIVE];
	uint32_t size[MAXLIVE];
	uint8_t fill[MAXLIVE];
	int live = 0;
	int64_t drift = 0; /* bytes_requested moves by the size given at free */
	uint8_t *base = nta_arena_base(a);

	for (int step = 0; step < steps; step++) {
		uint64_t r = next();
		if (live < MAXLIVE && (r % 100 < 55 || live == 0)) {
			uint32_t s = (r >> 8) % 100 < 90 ? 1 + (uint32_t)((r >> 16) % 1600) : 1 + (uint32_t)((r >> 16) % 20000);
			int64_t o = nta_alloc(a, s, (r >> 40) & 1 ? NTA_F_RESERVE : 0);
			if (o > 0) {
				for (int i = 0; i < live; i++) /* no overlap with any live block */
					if (!(o + (int64_t)s <= off[i] || off[i] + (int64_t)size[i] <= o)) {
						failures++;
						fprintf(stderr, "overlap at step %d\n", step);
					}
				off[live] = o;
				size[live] = s;
				fill[live] = (uint8_t)r;
				memset(base + o, fill[live], s);
				live++;
			} else {
				EXPECT_EQ(o, -ENOMEM);
			}
		} else if (r % 100 < 95) {
			int i = (int)((r >> 8) % (uint64_t)live);
			for (uint32_t b = 0; b < size[i]; b += 97)
				if (base[off[i] + b] != fill[i]) {
					failures++;
					fprintf(stderr, "block %d changed under us at step %d\n", i, step);
					break;
				}
			EXPECT_EQ(nta_free(a, (uint64_t)off[i], size[i]), 0);
			off[i] = off[live - 1];
			size[i] = size[live - 1];
			fill[i] = fill[live - 1];
			live--;
		} else if (live) {
			/* a bad free is refused and changes nothing but the count of bad frees: inside a block
			 * (which may happen to be another live block of that size, then a good free), with a
			 * size that needs one chunk more, or a second free of a block just freed */
			int i = (int)((r >> 8) % (uint64_t)live), how = (int)((r >> 20) % 3);
			uint64_t o = (uint64_t)off[i];
			uint32_t s = size[i];
			if (how == 2) { /* free it for real first */
				EXPECT_EQ(nta_free(a, o, s), 0);
				off[i] = off[live - 1];
				size[i] = size[live - 1];
				fill[i] = fill[live - 1];
				live--;
			}
			if (how == 0)
				o += chunk;
			else if (how == 1 && (kind != NTA_KIND_NTA || s > 4096 - chunk))
				how = 3; /* pow2 classes and whole pages round up: no wrong size is sure */
			else if (how == 1)
				s = (s + chunk - 1) / chunk * chunk + 1;
			struct nta_stats before = stats(a);
			int err = how == 3 ? -ERANGE : nta_free(a, o, s);
			if (how == 0) {
				EXPECT(err == -ENOENT || err == -EALREADY || err == -EINVAL || err == -ERANGE || err == 0);
			} else if (how == 1) {
				EXPECT_EQ(err, -ERANGE);
			} else if (how == 2) {
				EXPECT_EQ(err, -EALREADY);
			}
			struct nta_stats after = stats(a);
			if (err && how != 3) {
				EXPECT_EQ(after.bad_frees, before.bad_frees + 1);
				after.bad_frees = before.bad_frees;
				after.largest_free = before.largest_free;
				EXPECT(!memcmp(&before, &after, sizeof(before)));
			}
			if (err == 0 && how == 0) { /* the offset happened to be another live block of that size */
				for (int j = 0; j < live; j++)
					if ((uint64_t)off[j] == o) {
						drift += (int64_t)size[j] - (int64_t)s;
						off[j] = off[live - 1];
						size[j] = size[live - 1];
						fill[j] = fill[live - 1];
						live--;
						break;
					}
			}
		}
		if (step % 7 == 0 || steps < 5000)
			CLEAN(a);
		if (failures > 20)
			break;
	}
	EXPECT_EQ(stats(a).live_allocs, live);
	while (live--)
		EXPECT_EQ(nta_free(a, (uint64_t)off[live], size[live]), 0);
	nta_cache_flush(a);
	CLEAN(a);
	EXPECT_EQ(stats(a).pages_in_use, 0);
	EXPECT_EQ(stats(a).bytes_requested, drift);
	nta_arena_close(a);
}

/* nta_check() must notice each kind of damage, and name it. */
static void test_check_sees_corruption(void)
{
	struct {
		const char *what, *says;
	} cases[] = {
		{ "used bit", "used chunk outside any block" }, { "start bit", "blocks" }, { "counter", "counter live_allocs" },
		{ "node", "node" }, { "nonempty", "non-empty" }, { "cache", "cache" },
		{ "parked count", "its count says 2" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct nta_arena *a = mk(NTA_KIND_NTA, 32, 16, 0, 4);
		int64_t x = nta_alloc(a, 100, 0), y = nta_alloc(a, 200, 0);
		nta_alloc(a, 300, 0);
		nta_free(a, (uint64_t)y, 200); /* cached */
		nta_cache_flush(a);            /* now a free region between x and z */
		int64_t w = nta_alloc(a, 64, 0);
		nta_free(a, (uint64_t)w, 64);  /* cached again */
		CLEAN(a);
		struct nta_hdr *h = a->h;
		uint32_t p = (uint32_t)((x - (int64_t)h->data_off) >> h->page_shift);
		switch (i) {
		case 0: bit_set(bmp(a, p, BMP_USED), 100); break;    /* a free chunk marked used */
		case 1: bit_set(bmp(a, p, BMP_START), 1); break;     /* a block split in two */
		case 2: h->st.allocs++; break;
		case 3: node(a, (uint32_t)((y + 64) >> h->chunk_shift))->magic = 0; break;
		case 4: h->heaps[0].lists.nonempty[0] |= 1ull << 7; break;
		case 5: *cache_at(a, 0, 2, 0) += 1; break;
		case 6: h->heaps[0].parked++; break;           /* one block parked, counted twice */
		}
		char why[256];
		EXPECT_EQ(nta_check(a, why, sizeof(why)), -EUCLEAN);
		if (!strstr(why, cases[i].says)) {
			failures++;
			fprintf(stderr, "corrupt %s: nta_check said \"%s\"\n", cases[i].what, why);
		}
		nta_arena_close(a);
	}
}

int main(void)
{
	test_check_sees_corruption();
	test_exact_sizes();
	test_coalescing();
	test_checked_frees(NTA_KIND_NTA);
	test_checked_frees(NTA_KIND_POW2);
	test_cache();
	test_large(NTA_KIND_NTA);
	test_large(NTA_KIND_POW2);
	test_reserve(NTA_KIND_NTA);
	test_reserve(NTA_KIND_POW2);
	test_trim();
	test_attach();
	test_bad_configs();
	test_random(NTA_KIND_NTA, 32, 256, 0, 20000); /* the default geometry: alloc.c's fast paths */
	test_random(NTA_KIND_NTA, 32, 256, 64, 20000); /* another depth: the general path */
	test_random(NTA_KIND_NTA, 64, 128, NTA_CACHE_OFF, 20000);
	test_random(NTA_KIND_NTA, 16, 512, 4, 10000);
	test_random(NTA_KIND_POW2, 32, 256, 0, 20000);
	test_random(NTA_KIND_POW2, 64, 128, 0, 10000);
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
