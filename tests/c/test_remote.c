// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * test_remote.c - remote puts: many producer threads post puts of the
 * owner's fragments, one at a time and in batches, through a queue small
 * enough to be full and to wrap many times, while the owner allocates,
 * puts its own, drains and checks the pool. Built under ThreadSanitizer
 * ('make ctest'), which reports any access of the queue's slots the
 * protocol does not order. The EXPECT counters are the owner thread's only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "nta.h"

#define PRODUCERS 4
#define EACH 10000 /* fragments each producer puts */
#define QUEUE 64   /* the pool's remote queue: full often, around it 625 times */

struct producer {
	struct nta_pool *pool;
	int64_t *offs;
	size_t n;
	unsigned seed;
	/* out */
	size_t batches, refused;
	long error; /* a failure other than a full queue */
};

static void *produce(void *arg)
{
	struct producer *pr = arg;

	for (size_t k = 0; k < pr->n && !pr->error;) {
		size_t n = 1 + (size_t)rand_r(&pr->seed) % 48;
		if (n > pr->n - k)
			n = pr->n - k;
		long rc = n == 1 ? nta_pool_put_remote(pr->pool, (uint64_t)pr->offs[k])
				 : nta_pool_put_remote_bulk(pr->pool, pr->offs + k, n);
		if (rc == -EAGAIN) {
			pr->refused++;
			sched_yield(); /* the owner drains on its next allocation */
			continue;
		}
		if (rc < 0) {
			pr->error = rc;
			break;
		}
		pr->batches++;
		k += n;
	}
	return NULL;
}

static void test_many_producers(uint32_t allocator)
{
	struct nta_config acfg = { .max_pages = 65536 }; /* a page a fragment, under NTA_POOL_PAGE */
	struct nta_arena *a = nta_arena_create(NULL, &acfg);
	struct nta_pool_config cfg = { .allocator = allocator, .remote_size = QUEUE };
	struct nta_pool *p = a ? nta_pool_create(a, &cfg) : NULL;
	struct producer pr[PRODUCERS];
	pthread_t th[PRODUCERS];
	int64_t *offs = calloc(PRODUCERS * EACH, sizeof(*offs)), own[256];
	size_t nown = 0, total = PRODUCERS * EACH, batches = 0, refused = 0;
	unsigned seed = 7 + allocator;

	EXPECT(p != NULL);
	EXPECT(offs != NULL);
	if (!p || !offs)
		return;
	for (size_t i = 0; i < total; i++) { /* the fragments the producers will put */
		offs[i] = nta_pool_alloc_frag(p, 64 + (size_t)rand_r(&seed) % 1500, 0);
		if (offs[i] <= 0) {
			EXPECT(offs[i] > 0);
			return;
		}
	}
	EXPECT_CLEAN(p, a);
	for (int t = 0; t < PRODUCERS; t++) {
		pr[t] = (struct producer){ .pool = p, .offs = offs + (size_t)t * EACH, .n = EACH, .seed = 100u + t };
		EXPECT_EQ(pthread_create(&th[t], NULL, produce, &pr[t]), 0);
	}
	/* the owner meanwhile: its own fragments come and go, the queue is drained, the pool checked */
	for (int round = 0; round < 4000; round++) {
		if (nown < 256) {
			int64_t off = nta_pool_alloc_frag(p, 64 + (size_t)rand_r(&seed) % 1500, 0);
			EXPECT(off > 0);
			if (off > 0)
				own[nown++] = off;
		}
		if (nown && rand_r(&seed) % 3 == 0)
			EXPECT_EQ(nta_pool_put(p, (uint64_t)own[--nown], NTA_POOL_DIRECT), 0);
		if (round % 7 == 0)
			nta_pool_drain_remote(p);
		if (round % 500 == 0)
			EXPECT_CLEAN(p, a); /* the queue's published posts, while producers post */
	}
	for (int t = 0; t < PRODUCERS;) { /* drain until every producer has finished */
		nta_pool_drain_remote(p);
		if (pthread_tryjoin_np(th[t], NULL) == 0)
			t++;
		else
			sched_yield();
	}
	nta_pool_drain_remote(p);
	for (int t = 0; t < PRODUCERS; t++) {
		EXPECT_EQ(pr[t].error, 0);
		batches += pr[t].batches;
		refused += pr[t].refused;
	}
	struct nta_pool_stats st;
	nta_pool_stats(p, &st);
	EXPECT_EQ(st.remote.posted, total);
	EXPECT_EQ(st.remote.applied, total);
	EXPECT_EQ(st.remote.bad, 0);
	EXPECT_EQ(st.remote.pending, 0);
	EXPECT_EQ(st.remote.batches, batches);
	EXPECT_EQ(st.remote.full, refused);
	EXPECT(st.remote.full > 0); /* the queue was full, and nothing was lost */
	EXPECT(st.remote.max_wait_ns > 0);
	EXPECT(st.remote.max_wait_ns < 60000000000ull); /* not a post made during a drain, read as waiting -1 */
	EXPECT_EQ(st.fragments.frags, nown);
	EXPECT_CLEAN(p, a);
	while (nown)
		EXPECT_EQ(nta_pool_put(p, (uint64_t)own[--nown], NTA_POOL_DIRECT), 0);
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, NULL), 0);
	nta_arena_close(a);
	free(offs);
}

static void test_refusals(void)
{
	struct nta_config acfg = { .max_pages = 64 };
	struct nta_arena *a = nta_arena_create(NULL, &acfg);
	struct nta_pool_config cfg = { .remote_size = 4 };
	struct nta_pool *p = nta_pool_create(a, &cfg);
	int64_t off[6];
	char why[256];

	for (int i = 0; i < 6; i++)
		off[i] = nta_pool_alloc_frag(p, 100, 0);
	EXPECT_EQ(nta_pool_put_remote_bulk(p, off, 5), -EINVAL); /* larger than the queue */
	EXPECT_EQ(nta_pool_put_remote_bulk(p, off, 3), 3);
	EXPECT_EQ(nta_pool_put_remote_bulk(p, off + 3, 2), -EAGAIN); /* no room for both: neither posted */
	EXPECT_EQ(nta_pool_put_remote(p, (uint64_t)off[3]), 0);
	EXPECT_EQ(nta_pool_put_remote(p, (uint64_t)off[4]), -EAGAIN);
	EXPECT_EQ(nta_pool_check(p, why, sizeof(why)), 0);
	EXPECT_EQ(nta_pool_put_remote(p, (uint64_t)off[0]) == -EAGAIN, 1);
	EXPECT_EQ(nta_pool_drain_remote(p), 4);
	/* a put posted twice for a fragment with one holder: the checker says so before it is applied */
	EXPECT_EQ(nta_pool_put_remote(p, (uint64_t)off[4]), 0);
	EXPECT_EQ(nta_pool_put_remote(p, (uint64_t)off[4]), 0);
	EXPECT_EQ(nta_pool_check(p, why, sizeof(why)), -EUCLEAN);
	EXPECT(strstr(why, "2 remote puts of") != NULL);
	EXPECT_EQ(nta_pool_drain_remote(p), 2); /* the second is refused by the pool, and counted */
	struct nta_pool_stats st;
	nta_pool_stats(p, &st);
	EXPECT_EQ(st.remote.applied, 5);
	EXPECT_EQ(st.remote.bad, 1);
	EXPECT_EQ(st.remote.full, 3);
	EXPECT_EQ(nta_pool_check(p, why, sizeof(why)), 0);
	EXPECT_EQ(nta_pool_put(p, (uint64_t)off[5], 0), 0);
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, NULL), 0);
	nta_arena_close(a);
}

int main(void)
{
	test_refusals();
	for (uint32_t al = NTA_POOL_NTA; al <= NTA_POOL_PAGE; al++)
		test_many_producers(al);
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
