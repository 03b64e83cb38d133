// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * test_pool.c - C tests of the page pool, under ASan and UBSan ('make ctest').
 * nta_pool_check() and nta_check() run after every step that changes a pool.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expect.h"
#include "nta.h"

#define CLEAN() EXPECT_CLEAN(p, a)

static struct nta_stats ast(struct nta_arena *a)
{
	struct nta_stats s;
	nta_stats(a, &s);
	return s;
}

/* Pages a pool gave back may sit in the arena's own size cache: flush it first. */
static uint64_t arena_pages_in_use(struct nta_arena *a)
{
	nta_cache_flush(a);
	return ast(a).pages_in_use;
}

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

static struct nta_pool *pool(struct nta_arena *a, uint32_t cache, uint32_t refill, uint32_t ring, uint32_t flags)
{
	struct nta_pool_config c = { .cache_size = cache, .refill = refill, .ring_size = ring, .flags = flags };
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

static void test_defaults_and_fast_path(void)
{
	struct nta_arena *a = arena(512, 0);
	struct nta_pool *p = nta_pool_create(a, NULL);
	int64_t x = nta_pool_alloc_page(p, 0);

	EXPECT(x > 0 && x % 4096 == 0);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(s.alloc.slow, 1);      /* the arena, 64 pages at once (refill) */
	EXPECT_EQ(s.pages.maps, 64);
	EXPECT_EQ(s.pages.hold, 64);
	EXPECT_EQ(s.pages.cache_len, 63);
	EXPECT_EQ(s.pages.pages_in_use, 1);
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).recycle.cached, 1);
	EXPECT_EQ(nta_pool_alloc_page(p, 0), x); /* LIFO */
	EXPECT_EQ(pst(p).alloc.fast, 1);
	EXPECT_EQ(pst(p).pages.maps, 64);              /* recycled pages stay mapped */
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, NTA_POOL_DIRECT), 0);
	destroy(p);
	EXPECT_EQ(arena_pages_in_use(a), 0); /* every page back in the arena */
	nta_arena_close(a);
}

static void test_ring_refill_and_full(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, 4, 2, 4, 0);
	int64_t pg[12];

	for (int i = 0; i < 12; i++)
		pg[i] = nta_pool_alloc_page(p, 0);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(s.alloc.fast + s.alloc.slow, 12);
	EXPECT_EQ(s.pages.hold, 12);
	CLEAN();
	/* not the fast context: into the ring; a full ring releases to the arena */
	for (int i = 0; i < 6; i++)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)pg[i], 0), 0);
	s = pst(p);
	EXPECT_EQ(s.recycle.ring, 4);
	EXPECT_EQ(s.recycle.ring_full, 2);
	EXPECT_EQ(s.pages.release, 2);
	EXPECT_EQ(s.pages.unmaps, 2);
	EXPECT_EQ(s.pages.ring_len, 4);
	CLEAN();
	/* fast context: cache (4), then cache_full -> ring is full -> ring_full */
	for (int i = 6; i < 12; i++)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)pg[i], NTA_POOL_DIRECT), 0);
	s = pst(p);
	EXPECT_EQ(s.recycle.cached, 4);
	EXPECT_EQ(s.recycle.cache_full, 2);
	EXPECT_EQ(s.recycle.ring_full, 4);
	CLEAN();
	/* empty the cache, then the next allocation refills 2 from the ring */
	for (int i = 0; i < 4; i++)
		pg[i] = nta_pool_alloc_page(p, 0);
	int64_t r = nta_pool_alloc_page(p, 0);
	s = pst(p);
	EXPECT(r > 0);
	EXPECT_EQ(s.alloc.refill, 1);
	EXPECT_EQ(s.pages.ring_len, 2);
	EXPECT_EQ(s.pages.cache_len, 1);
	CLEAN();
	nta_pool_put(p, (uint64_t)r, NTA_POOL_DIRECT);
	for (int i = 0; i < 4; i++)
		nta_pool_put(p, (uint64_t)pg[i], NTA_POOL_DIRECT);
	destroy(p);
	EXPECT_EQ(arena_pages_in_use(a), 0);
	nta_arena_close(a);
}

static void test_fragments(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, 8, 1, 8, 0);
	int64_t f1 = nta_pool_alloc_frag(p, 1514, 0), f2 = nta_pool_alloc_frag(p, 64, 0);
	int64_t f3 = nta_pool_alloc_frag(p, 1500, 0);

	EXPECT(f1 > 0 && f1 % 4096 == 0);
	EXPECT_EQ(f2 - f1, 48 * 32); /* exact: ceil(1514/32) chunks, not 2048 */
	EXPECT_EQ(f3 - f2, 64);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(s.fragments.frags, 3);
	EXPECT_EQ(s.fragments.frag_bytes, (48 + 2 + 47) * 32);
	EXPECT_EQ(s.pages.pages_in_use, 1);
	CLEAN();
	/* a freed fragment's chunks take the next one that fits */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f2, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(nta_pool_alloc_frag(p, 60, 0), f2);
	f2 = f2; /* (the same offset, a new fragment) */
	CLEAN();
	/* holders: one more get needs one more put; the page stays while any live */
	EXPECT_EQ(nta_pool_get(p, (uint64_t)f1), 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).fragments.frags, 3);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).fragments.frags, 2);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT), -EALREADY); /* below zero */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f3 + 32, NTA_POOL_DIRECT), -ENOENT); /* inside a fragment */
	EXPECT_EQ(nta_pool_put(p, 16, NTA_POOL_DIRECT), -EINVAL);
	CLEAN();
	/* a fragment that does not fit moves to a new page; the old one recycles once empty */
	int64_t big = nta_pool_alloc_frag(p, 3000, 0);
	EXPECT(big > 0 && big / 4096 != f1 / 4096);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f2, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).recycle.cached, 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f3, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).recycle.cached, 1); /* the first page, all its fragments gone */
	CLEAN();
	/* jumbo: a combined block from the arena, released when done */
	int64_t j = nta_pool_alloc_frag(p, 9000, 0);
	EXPECT(j > 0);
	EXPECT_EQ(pst(p).alloc.slow_high_order, 1);
	memset((char *)nta_arena_base(a) + j, 7, 9000);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)j + 4096, 0), -ENOENT);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)j, 0), 0);
	EXPECT_EQ(pst(p).pages.release, 3);
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)big, NTA_POOL_DIRECT), 0);
	destroy(p);
	EXPECT_EQ(arena_pages_in_use(a), 0);
	nta_arena_close(a);
}

struct thief {
	int calls;
	int verdict;
};

static int dtor(void *ctx, struct nta_pool *p, uint64_t page)
{
	struct thief *t = ctx;
	(void)p;
	(void)page;
	t->calls++;
	return t->verdict;
}

static void test_destructors(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, 8, 1, 8, 0);
	struct thief t = { 0, NTA_DTOR_STEAL };

	nta_pool_set_dtor(p, dtor, &t);
	int64_t x = nta_pool_alloc_page(p, 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, NTA_POOL_DIRECT), 0);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(t.calls, 1);
	EXPECT_EQ(s.destructor.dtor_steal, 1);
	EXPECT_EQ(s.recycle.cached, 0);
	EXPECT_EQ(s.pages.pages_in_use, 1); /* the destructor kept it, with one reference */
	CLEAN();
	t.verdict = NTA_DTOR_RELEASE;
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, NTA_POOL_DIRECT), 0);
	s = pst(p);
	EXPECT_EQ(s.destructor.dtor_release, 1);
	EXPECT_EQ(s.pages.release, 1);
	EXPECT_EQ(s.pages.inflight, 0);
	CLEAN();
	t.verdict = NTA_DTOR_RECYCLE;
	x = nta_pool_alloc_page(p, 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).recycle.cached, 1);
	destroy(p);
	nta_arena_close(a);
}

static void test_batch_destructor(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, 8, 1, 8, NTA_POOL_BATCH_DTOR);
	int64_t pg[3], got[8];
	int32_t verdicts[3] = { NTA_DTOR_RECYCLE, NTA_DTOR_STEAL, NTA_DTOR_RELEASE };

	for (int i = 0; i < 3; i++)
		pg[i] = nta_pool_alloc_page(p, 0);
	for (int i = 0; i < 3; i++)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)pg[i], NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).destructor.dtor_pending, 3);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)pg[0], NTA_POOL_DIRECT), -EALREADY); /* waiting: nobody holds it */
	CLEAN();
	EXPECT_EQ(nta_pool_dtor_take(p, got, 8), 3);
	EXPECT_EQ(got[0], pg[0]);
	int32_t bad[3] = { 0, 7, 0 };
	EXPECT_EQ(nta_pool_dtor_complete(p, got, bad, 3), -EINVAL); /* nothing changed */
	EXPECT_EQ(pst(p).destructor.dtor_pending, 3);
	EXPECT_EQ(nta_pool_dtor_complete(p, got, verdicts, 3), 0);
	struct nta_pool_stats s = pst(p);
	EXPECT_EQ(s.destructor.dtor_pending, 0);
	EXPECT_EQ(s.recycle.cached, 1);
	EXPECT_EQ(s.destructor.dtor_steal, 1);
	EXPECT_EQ(s.destructor.dtor_release, 1);
	EXPECT_EQ(nta_pool_dtor_complete(p, got, verdicts, 1), -EINVAL); /* judged already */
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)pg[1], NTA_POOL_DIRECT), 0); /* the stolen one, again pending */
	EXPECT_EQ(nta_pool_dtor_take(p, got, 8), 1);
	int32_t rel = NTA_DTOR_RELEASE;
	EXPECT_EQ(nta_pool_dtor_complete(p, got, &rel, 1), 0);
	destroy(p);
	nta_arena_close(a);
}

static void *late_put(void *arg)
{
	void **v = arg;
	usleep(50000);
	nta_pool_put_remote(v[0], (uint64_t)(intptr_t)v[1]);
	return NULL;
}

static void test_destroy_in_flight(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool(a, 8, 2, 8, 0);
	int64_t x = nta_pool_alloc_page(p, 0), y = nta_pool_alloc_frag(p, 100, 0), list[4];
	size_t n = 0;

	EXPECT_EQ(nta_pool_destroy(p, 0, list, 4, &n), -EBUSY);
	EXPECT_EQ(n, 2);
	EXPECT(list[0] == x || list[1] == x);
	CLEAN(); /* still a working pool */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)y, NTA_POOL_DIRECT), 0);
	/* another thread lets go of x in 50 ms: destroy waits for it */
	void *args[2] = { p, (void *)(intptr_t)x };
	pthread_t th;
	pthread_create(&th, NULL, late_put, args);
	EXPECT_EQ(nta_pool_destroy(p, 5000, list, 4, &n), 0);
	pthread_join(th, NULL);
	EXPECT_EQ(arena_pages_in_use(a), 0);
	nta_arena_close(a);
}

static void test_reserve(void)
{
	struct nta_arena *a = arena(6, 2);
	struct nta_pool *p = pool(a, 8, 1, 8, 0);
	int64_t pg[6];
	int n = 0;

	while ((pg[n] = nta_pool_alloc_page(p, 0)) > 0)
		n++;
	EXPECT_EQ(n, 4);
	EXPECT_EQ(pg[n], -ENOMEM);
	EXPECT_EQ(pst(p).alloc.alloc_fails, 1);
	int64_t r = nta_pool_alloc_page(p, NTA_F_RESERVE);
	EXPECT(r > 0);
	EXPECT_EQ(pst(p).pages.reserve_pages, 1);
	CLEAN();
	/* done with it: straight back to the arena, never into the cache */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)r, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).pages.cache_len, 0);
	EXPECT_EQ(pst(p).pages.reserve_pages, 0);
	EXPECT_EQ(ast(a).reserve_pages_in_use, 0);
	EXPECT_EQ(nta_pool_alloc_page(p, 0), -ENOMEM); /* an ordinary allocation never gets it */
	CLEAN();
	for (int i = 0; i < n; i++)
		nta_pool_put(p, (uint64_t)pg[i], NTA_POOL_DIRECT);
	destroy(p);
	nta_arena_close(a);
}

/* A seeded random walk: fragments of packet sizes with holders, direct and
 * remote puts, checks after every step. */
static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void test_random(int steps, uint32_t allocator)
{
	struct nta_arena *a = arena(512, 8);
	struct nta_pool_config cfg = { .cache_size = 16, .refill = 8, .ring_size = 32, .allocator = allocator };
	struct nta_pool *p = nta_pool_create(a, &cfg);
	enum { MAX = 400 };
	int64_t off[MAX];
	uint32_t len[MAX];
	int refs[MAX], live = 0;

	for (int s = 0; s < steps && failures < 20; s++) {
		uint64_t r = next();
		if (live < MAX && (r % 100 < 50 || !live)) {
			uint32_t size = r % 10 < 8 ? 1 + (uint32_t)((r >> 8) % 1518) : 1 + (uint32_t)((r >> 8) % 9000);
			int64_t o = (r >> 32) % 5 == 0 ? nta_pool_alloc_page(p, 0) : nta_pool_alloc_frag(p, size, 0);
			if (o > 0) {
				off[live] = o;
				len[live] = (r >> 32) % 5 == 0 ? 4096 : size;
				refs[live++] = 1;
			}
		} else if (r % 100 < 60) {
			int i = (int)((r >> 8) % (uint64_t)live);
			EXPECT_EQ(nta_pool_get(p, (uint64_t)off[i]), 0);
			refs[i]++;
		} else {
			int i = (int)((r >> 8) % (uint64_t)live);
			unsigned flags = (r >> 40) & 1 ? NTA_POOL_DIRECT : 0;
			int remote = (r >> 41) % 8 == 0;
			if (len[i] > 32 && (r >> 44) % 8 == 0) { /* inside a block: refused, nothing changed */
				struct nta_pool_stats b = pst(p);
				int err = nta_pool_put(p, (uint64_t)off[i] + 32, flags);
				struct nta_pool_stats after = pst(p);
				EXPECT(err == -ENOENT || err == -EALREADY);
				EXPECT(!memcmp(&b.fragments, &after.fragments, sizeof(b.fragments)));
			}
			if (remote)
				EXPECT_EQ(nta_pool_put_remote(p, (uint64_t)off[i]), 0);
			else
				EXPECT_EQ(nta_pool_put(p, (uint64_t)off[i], flags), 0);
			if (--refs[i] == 0) {
				if (!remote && (r >> 47) % 4 == 0) { /* a second put of what nobody holds: refused */
					struct nta_pool_stats b = pst(p);
					int err = nta_pool_put(p, (uint64_t)off[i], flags);
					struct nta_pool_stats after = pst(p);
					EXPECT(err == -EALREADY || err == -ENOENT);
					EXPECT(!memcmp(&b.fragments, &after.fragments, sizeof(b.fragments)));
				}
				off[i] = off[--live];
				len[i] = len[live];
				refs[i] = refs[live];
			}
		}
		if ((r >> 50) % 16 == 0)
			nta_pool_drain_remote(p);
		if (s % 5 == 0) {
			nta_pool_drain_remote(p); /* the pool's books only add up with the queue applied */
			CLEAN();
		}
	}
	for (int i = 0; i < live; i++)
		while (refs[i]--)
			EXPECT_EQ(nta_pool_put(p, (uint64_t)off[i], NTA_POOL_DIRECT), 0);
	nta_pool_drain_remote(p);
	CLEAN();
	EXPECT_EQ(pst(p).fragments.frags, 0);
	destroy(p);
	EXPECT_EQ(arena_pages_in_use(a), 0);
	nta_arena_close(a);
}

/* A reader in another process: pins a fragment and reads it in place. */
static void test_reader(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/dev/shm/nta-ctest-reader-%d", getpid());
	struct nta_config cfg = { .max_pages = 64, .flags = NTA_ARENA_UNLINK };
	struct nta_arena *a = nta_arena_create(path, &cfg);
	struct nta_pool *p = pool(a, 8, 1, 8, 0);
	int64_t f = nta_pool_alloc_frag(p, 100, 0), g = nta_pool_alloc_frag(p, 100, 0);
	memcpy((char *)nta_arena_base(a) + f, "a frame, read in place", 23);
	int to_child[2], to_parent[2];
	if (pipe(to_child) || pipe(to_parent))
		exit(2);

	for (int round = 0; round < 2; round++) { /* 0: the reader unpins; 1: it dies pinning */
		pid_t pid = fork();
		if (pid == 0) {
			close(to_child[1]);
			close(to_parent[0]);
			struct nta_reader *r = nta_reader_attach(path);
			char ok = r && nta_reader_pin(r, (uint64_t)f) == 0 &&
				  !memcmp((const char *)nta_arena_base(nta_reader_arena(r)) + f, "a frame, read in place", 23)
				  ? 'p' : 'x';
			if (write(to_parent[1], &ok, 1) != 1 || read(to_child[0], &ok, 1) != 1)
				_exit(3);
			if (round == 1) /* dies holding the pin */
				raise(SIGKILL);
			ok = nta_reader_unpin(r, (uint64_t)f) == 0 ? 'u' : 'x';
			nta_reader_close(r);
			if (write(to_parent[1], &ok, 1) != 1)
				_exit(3);
			_exit(0);
		}
		char c = 0;
		if (round == 1) { /* the last child: let a dead one give EOF instead of a hang */
			close(to_parent[1]);
		}
		EXPECT_EQ(read(to_parent[0], &c, 1), 1);
		EXPECT_EQ(c, 'p');
		/* the owner lets go: the free is deferred, the bytes stay */
		EXPECT_EQ(nta_pool_put(p, (uint64_t)f, NTA_POOL_DIRECT), 0);
		EXPECT_EQ(pst(p).fragments.pinned, 1);
		EXPECT_EQ(nta_pool_put(p, (uint64_t)f, NTA_POOL_DIRECT), -EALREADY);
		int64_t h = nta_pool_alloc_frag(p, 100, 0);
		EXPECT(h != f);
		EXPECT_EQ(nta_pool_reap(p), 0); /* still pinned */
		CLEAN();
		EXPECT_EQ(write(to_child[1], "g", 1), 1);
		if (round == 0) {
			EXPECT_EQ(read(to_parent[0], &c, 1), 1);
			EXPECT_EQ(c, 'u');
		}
		int status;
		waitpid(pid, &status, 0);
		EXPECT_EQ(round == 1 ? WIFSIGNALED(status) : WIFEXITED(status), 1);
		EXPECT_EQ(nta_pool_reap(p), 1); /* unpinned, or its reader is dead: freed */
		EXPECT_EQ(pst(p).fragments.pinned, 0);
		EXPECT_EQ(pst(p).fragments.readers_reclaimed, round == 1 ? 1 : 0);
		CLEAN();
		nta_pool_put(p, (uint64_t)h, NTA_POOL_DIRECT);
		f = nta_pool_alloc_frag(p, 100, 0); /* the next round's fragment */
		memcpy((char *)nta_arena_base(a) + f, "a frame, read in place", 23);
	}
	/* a pin on a block already let go of fails */
	struct nta_reader *r = nta_reader_attach(path);
	EXPECT(r != NULL);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)g, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(nta_reader_pin(r, (uint64_t)g), -ESTALE);
	EXPECT_EQ(nta_reader_unpin(r, (uint64_t)g), -ENOENT);
	EXPECT_EQ(nta_reader_pin(r, 3), -EINVAL);
	nta_reader_close(r);
	nta_pool_put(p, (uint64_t)f, NTA_POOL_DIRECT);
	CLEAN();
	destroy(p);
	nta_arena_close(a);
	EXPECT_EQ(access(path, F_OK), -1);
}

static void test_slab_fragments(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool_config c = { .cache_size = 8, .refill = 1, .ring_size = 8, .allocator = NTA_POOL_SLAB };
	struct nta_pool *p = nta_pool_create(a, &c);
	int64_t f1 = nta_pool_alloc_frag(p, 1514, 0), f2 = nta_pool_alloc_frag(p, 1500, 0);
	int64_t f3 = nta_pool_alloc_frag(p, 65, 0), f4 = nta_pool_alloc_frag(p, 1, 0);

	EXPECT_EQ(f2 - f1, 2048);                /* 1514 -> 2048, two to a page */
	EXPECT(f3 / 4096 != f1 / 4096);          /* 65 -> 128: a slab of its own class */
	EXPECT(f4 / 4096 != f3 / 4096);          /* 1 -> 32: another */
	EXPECT_EQ(pst(p).fragments.frag_bytes, 2048 + 2048 + 128 + 32);
	EXPECT_EQ(pst(p).pages.pages_in_use, 3);
	CLEAN();
	int64_t j = nta_pool_alloc_frag(p, 9000, 0); /* 3 pages -> 4 */
	EXPECT_EQ(pst(p).pages.hold, 3 + 4);
	nta_pool_put(p, (uint64_t)j, 0);
	int64_t f5 = nta_pool_alloc_frag(p, 2000, 0); /* a second 2048 slab */
	EXPECT(f5 / 4096 != f1 / 4096);
	EXPECT_EQ(pst(p).pages.pages_in_use, 4);
	nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 4); /* its slab still holds f2 */
	nta_pool_put(p, (uint64_t)f2, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 3); /* an empty slab goes back to the pool ... */
	nta_pool_put(p, (uint64_t)f5, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 3); /* ... but the class's last one is kept */
	nta_pool_put(p, (uint64_t)f3, NTA_POOL_DIRECT);
	nta_pool_put(p, (uint64_t)f4, NTA_POOL_DIRECT);
	CLEAN();
	destroy(p);
	nta_arena_close(a);
}

static struct nta_pool *pool_of(struct nta_arena *a, uint32_t allocator)
{
	struct nta_pool_config c = { .cache_size = 8, .refill = 1, .ring_size = 8, .allocator = allocator };
	struct nta_pool *p = nta_pool_create(a, &c);
	if (!p) {
		perror("pool");
		exit(2);
	}
	return p;
}

/* The kernel's page_pool_alloc_frag: in order from the current page; nothing reused while the page holds a
 * fragment; a page that fills with all its fragments gone starts again at its beginning. */
static void test_ppfrag_fragments(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool_of(a, NTA_POOL_PPFRAG);
	int64_t f1 = nta_pool_alloc_frag(p, 1500, 0), f2 = nta_pool_alloc_frag(p, 64, 0);
	int64_t f3 = nta_pool_alloc_frag(p, 1500, 0);

	EXPECT_EQ(f2 - f1, 47 * 32);
	EXPECT_EQ(f3 - f2, 64);
	CLEAN();
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f2, NTA_POOL_DIRECT), 0);
	int64_t f4 = nta_pool_alloc_frag(p, 64, 0); /* not into f2's hole: after f3 */
	EXPECT_EQ(f4 - f3, 47 * 32);
	int64_t f5 = nta_pool_alloc_frag(p, 1500, 0); /* 98 of 128 chunks used: a new page */
	EXPECT(f5 / 4096 != f1 / 4096);
	EXPECT_EQ(pst(p).pages.pages_in_use, 2);
	nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT);
	nta_pool_put(p, (uint64_t)f3, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 2);
	nta_pool_put(p, (uint64_t)f4, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 1); /* the old page, its last fragment gone, back to the pool */
	EXPECT_EQ(pst(p).recycle.cached, 1);
	CLEAN();
	nta_pool_put(p, (uint64_t)f5, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 1); /* the current page stays current, empty */
	int64_t f6 = nta_pool_alloc_frag(p, 3000, 0); /* does not fit after the cursor, the page is empty: */
	EXPECT_EQ(f6, f5);                            /* it starts again at its beginning */
	int64_t f7 = nta_pool_alloc_frag(p, 3000, 0); /* does not fit, the page holds f6: a new one */
	EXPECT(f7 / 4096 != f6 / 4096);
	EXPECT_EQ(pst(p).pages.pages_in_use, 2);
	nta_pool_put(p, (uint64_t)f6, NTA_POOL_DIRECT);
	EXPECT_EQ(pst(p).pages.pages_in_use, 1);
	nta_pool_put(p, (uint64_t)f7, NTA_POOL_DIRECT);
	CLEAN();
	destroy(p);
	EXPECT_EQ(arena_pages_in_use(a), 0);
	nta_arena_close(a);
}

/* One page per frame: a 64-byte fragment takes a whole page, and gives it back whole. */
static void test_page_fragments(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool_of(a, NTA_POOL_PAGE);
	int64_t f1 = nta_pool_alloc_frag(p, 64, 0), f2 = nta_pool_alloc_frag(p, 1500, 0);

	EXPECT(f1 % 4096 == f2 % 4096 && f1 != f2);
	EXPECT_EQ(pst(p).fragments.frag_bytes, 2 * 4096);
	EXPECT_EQ(nta_pool_frag_size(p, 64), 4096);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1 + 64, NTA_POOL_DIRECT), -ENOENT);
	EXPECT_EQ(nta_pool_get(p, (uint64_t)f1), 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).recycle.cached, 1);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f1, NTA_POOL_DIRECT), -EALREADY);
	nta_pool_put(p, (uint64_t)f2, NTA_POOL_DIRECT);
	CLEAN();
	destroy(p);
	EXPECT_EQ(arena_pages_in_use(a), 0);
	nta_arena_close(a);
}

/* A page of the pool's heap is the pool's alone: the front door refuses it, and slots run out. */
static void test_heaps_apart(void)
{
	struct nta_arena *a = arena(64, 0);
	struct nta_pool *p = pool_of(a, NTA_POOL_NTA), *more[NTA_MAX_POOLS];
	int64_t f = nta_pool_alloc_frag(p, 100, 0), o = nta_alloc(a, 100, 0);

	EXPECT(f > 0 && o > 0 && f / 4096 != o / 4096); /* the arena's own blocks are in pages of its own */
	EXPECT_EQ(nta_free(a, (uint64_t)f, 100), -ENOENT);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)o, 0), -ENOENT);
	int k = 0;
	while (k < NTA_MAX_POOLS && (more[k] = nta_pool_create(a, NULL)))
		k++;
	EXPECT_EQ(k, NTA_MAX_POOLS - 1);
	EXPECT(errno == EUSERS);
	while (k--)
		destroy(more[k]);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)f, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(nta_free(a, (uint64_t)o, 100), 0);
	CLEAN();
	destroy(p);
	nta_arena_close(a);
}

/* Receive buffers cut to their frames: the tail back at once, combined, taken again; the books stay
 * exact, and only the NTA can do it. */
static void test_trim(void)
{
	struct nta_config ac = { .max_pages = 64 };
	struct nta_arena *a = nta_arena_create(NULL, &ac);
	struct nta_pool *p = nta_pool_create(a, NULL);
	struct nta_pool_stats st;
	int64_t buf[64];

	for (int i = 0; i < 8; i++) /* eight MTU-sized buffers: 48 chunks each */
		buf[i] = nta_pool_alloc_frag(p, 1536, 0);
	EXPECT_EQ(buf[1], buf[0] + 1536);
	EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)buf[0], 60), 64); /* a 60-byte frame: 2 chunks */
	EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)buf[1], 1500), 1504);
	EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)buf[1], 1536), 1504); /* larger: nothing changes */
	EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)buf[2], 0), -EINVAL);
	EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)buf[2] + 32, 64), -ENOENT);
	nta_pool_stats(p, &st);
	EXPECT_EQ(st.fragments.frags, 8);
	EXPECT_EQ(st.fragments.frag_bytes, 6 * 1536 + 64 + 1504);
	EXPECT_EQ(st.fragments.trims, 2);
	EXPECT_EQ(st.fragments.trimmed_bytes, 1472 + 32);
	EXPECT_CLEAN(p, a);
	/* the 1,472 bytes after buf[0]'s frame are free, and a block that fits goes there */
	int64_t x = nta_pool_alloc_frag(p, 1400, 0);
	EXPECT_EQ(x, buf[0] + 64);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, 0), 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)buf[0], 0), 0);
	EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)buf[0], 64), -EALREADY); /* not held */
	for (int i = 1; i < 8; i++)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)buf[i], 0), 0);
	nta_pool_stats(p, &st);
	EXPECT_EQ(st.fragments.frags, 0);
	EXPECT_EQ(st.fragments.frag_bytes, 0);
	EXPECT_CLEAN(p, a);
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, NULL), 0);
	/* the others cannot give part of a block back */
	for (uint32_t al = NTA_POOL_SLAB; al <= NTA_POOL_PAGE; al++) {
		struct nta_pool_config cfg = { .allocator = al };
		p = nta_pool_create(a, &cfg);
		int64_t y = nta_pool_alloc_frag(p, 1536, 0);
		EXPECT_EQ(nta_pool_frag_trim(p, (uint64_t)y, 64), -EOPNOTSUPP);
		EXPECT_EQ(nta_pool_put(p, (uint64_t)y, 0), 0);
		EXPECT_CLEAN(p, a);
		EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, NULL), 0);
	}
	nta_arena_close(a);
}

/* A buffer of a whole aligned page whose frame landed past the headroom: cut to the frame, head and tail back
 * at once and taken again; refused, with nothing changed, while another holder or a reader knows it by its
 * start, and by every allocator but the NTA. */
static void test_cut(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/dev/shm/nta-ctest-cut-%d", getpid());
	struct nta_config ac = { .max_pages = 64, .flags = NTA_ARENA_UNLINK };
	struct nta_arena *a = nta_arena_create(path, &ac);
	struct nta_pool *p = nta_pool_create(a, NULL);
	struct nta_stats as;
	int64_t b[4];

	nta_stats(a, &as);
	for (int i = 0; i < 4; i++) { /* a page each, page-aligned */
		b[i] = nta_pool_alloc_frag(p, 4096, 0);
		EXPECT(b[i] > 0 && ((uint64_t)b[i] - as.data_off) % 4096 == 0);
	}
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[0], 224, 0), -EINVAL);
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[0], 100, 64), -EINVAL);   /* not a chunk multiple */
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[0], 4064, 64), -EINVAL);  /* past the block */
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[0] + 32, 224, 64), -ENOENT);
	EXPECT_EQ(nta_pool_get(p, (uint64_t)b[0]), 0);
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[0], 224, 64), -EBUSY);    /* two holders */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)b[0], 0), 0);
	EXPECT_EQ(pst(p).fragments.trims, 0);
	EXPECT_EQ(pst(p).fragments.frag_bytes, 4 * 4096);
	CLEAN();
	/* a 100-byte frame 224 bytes in: 4 chunks kept, 7 before and 117 after given back */
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[0], 224, 100), b[0] + 224);
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[1], 0, 1500), b[1]);     /* no head: a trim */
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[2], 256, 3840), b[2] + 256); /* to the end: the head only */
	EXPECT_EQ(pst(p).fragments.trims, 3);
	EXPECT_EQ(pst(p).fragments.trimmed_bytes, (4096 - 128) + (4096 - 1504) + 256);
	EXPECT_EQ(pst(p).fragments.frag_bytes, 128 + 1504 + 3840 + 4096);
	EXPECT_EQ(pst(p).fragments.frags, 4);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)b[0], 0), -EALREADY);  /* the old start is free now */
	CLEAN();
	/* the freed head takes a block that fits, at the page's start */
	int64_t x = nta_pool_alloc_frag(p, 200, 0);
	EXPECT_EQ(x, b[0]);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)x, 0), 0);
	/* a reader pins the start: the block stays whole, and its reader's view good */
	struct nta_reader *r = nta_reader_attach(path);
	EXPECT(r != NULL);
	EXPECT_EQ(nta_reader_pin(r, (uint64_t)b[3]), 0);
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[3], 256, 64), -EBUSY);
	EXPECT_EQ(pst(p).fragments.frag_bytes, 128 + 1504 + 3840 + 4096);
	EXPECT_EQ(nta_pool_get(p, (uint64_t)b[3]), 0); /* still held, by one */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)b[3], 0), 0);
	EXPECT_EQ(nta_reader_unpin(r, (uint64_t)b[3]), 0);
	nta_reader_close(r);
	EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)b[3], 256, 64), b[3] + 256);
	CLEAN();
	const int64_t now[4] = { b[0] + 224, b[1], b[2] + 256, b[3] + 256 };
	for (int i = 0; i < 4; i++)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)now[i], 0), 0);
	EXPECT_EQ(pst(p).fragments.frags, 0);
	EXPECT_EQ(pst(p).fragments.frag_bytes, 0);
	CLEAN();
	destroy(p);
	for (uint32_t al = NTA_POOL_SLAB; al <= NTA_POOL_PAGE; al++) {
		struct nta_pool_config cfg = { .allocator = al };
		p = nta_pool_create(a, &cfg);
		int64_t y = nta_pool_alloc_frag(p, 4096, 0);
		EXPECT_EQ(nta_pool_frag_cut(p, (uint64_t)y, 256, 64), -EOPNOTSUPP);
		EXPECT_EQ(nta_pool_put(p, (uint64_t)y, 0), 0);
		CLEAN();
		EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, NULL), 0);
	}
	nta_arena_close(a);
}

/* A whole page a reader pins, given back in the owner's context: the direct recycle waits for the pin
 * (never into the cache while pinned), as a fragment's free does; once unpinned, reaped into the cache. */
static void test_page_pinned_by_reader(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/dev/shm/nta-ctest-pinpage-%d", getpid());
	struct nta_config cfg = { .max_pages = 64, .flags = NTA_ARENA_UNLINK };
	struct nta_arena *a = nta_arena_create(path, &cfg);
	struct nta_pool *p = pool(a, 8, 1, 8, 0);
	int64_t w = nta_pool_alloc_page(p, 0);
	struct nta_reader *r = nta_reader_attach(path);

	EXPECT(r != NULL);
	EXPECT_EQ(nta_reader_pin(r, (uint64_t)w), 0);
	uint32_t cached = pst(p).pages.cache_len;
	EXPECT_EQ(nta_pool_put(p, (uint64_t)w, NTA_POOL_DIRECT), 0);
	EXPECT_EQ(pst(p).fragments.pinned, 1);
	EXPECT_EQ(pst(p).pages.cache_len, cached);
	EXPECT_EQ(pst(p).pages.pages_in_use, 1); /* still out: its reader has it */
	EXPECT_EQ(nta_pool_put(p, (uint64_t)w, NTA_POOL_DIRECT), -EALREADY);
	EXPECT_EQ(nta_reader_unpin(r, (uint64_t)w), 0);
	EXPECT_EQ(nta_pool_reap(p), 1);
	EXPECT_EQ(pst(p).pages.pages_in_use, 0);
	EXPECT_EQ(pst(p).fragments.pinned, 0);
	nta_reader_close(r);
	destroy(p);
	nta_arena_close(a);
}

int main(void)
{
	test_trim();
	test_cut();
	test_ppfrag_fragments();
	test_page_fragments();
	test_heaps_apart();
	test_slab_fragments();
	test_reader();
	test_page_pinned_by_reader();
	test_defaults_and_fast_path();
	test_ring_refill_and_full();
	test_fragments();
	test_destructors();
	test_batch_destructor();
	test_destroy_in_flight();
	test_reserve();
	for (uint32_t al = NTA_POOL_NTA; al <= NTA_POOL_PAGE; al++)
		test_random(al == NTA_POOL_NTA ? 20000 : 8000, al);
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
