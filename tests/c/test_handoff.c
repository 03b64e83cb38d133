// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * test_handoff.c - frees on another CPU: the controller (the pool's owner,
 * this thread) handles records under a hold policy and hands what it lets
 * go to a reader thread, which reads each fragment and posts its free to
 * the pool's remote queue; the owner applies them on its allocations and
 * drains. A handoff and a queue small enough to be full often. Built under
 * ThreadSanitizer ('make ctest'). At the end: every fragment handed off
 * was posted and applied, the pool balanced and both checkers clean.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "expect.h"

#define HANDOFF 128
#define QUEUE 64

static void *read_frees(void *arg)
{
	struct nta_free_reader *r = arg;
	long rc = nta_free_reader_run(r);

	return (void *)(intptr_t)rc;
}

static void test_spsc(void)
{
	struct nta_handoff *h = nta_handoff_create(4);
	int64_t out[8];

	EXPECT(nta_handoff_create(3) == NULL && errno == EINVAL);
	EXPECT(h != NULL);
	for (int i = 0; i < 4; i++)
		EXPECT_EQ(nta_handoff_push(h, 100 + i), 0);
	EXPECT_EQ(nta_handoff_push(h, 104), -EAGAIN);
	EXPECT_EQ(nta_handoff_queued(h), 4);
	EXPECT_EQ(nta_handoff_take(h, out, 3), 3);
	EXPECT_EQ(out[0], 100);
	EXPECT_EQ(out[2], 102);
	EXPECT_EQ(nta_handoff_push(h, 104), 0); /* around the ring */
	EXPECT_EQ(nta_handoff_take(h, out, 8), 2);
	EXPECT_EQ(out[0], 103);
	EXPECT_EQ(out[1], 104);
	EXPECT_EQ(nta_handoff_take(h, out, 8), 0);
	nta_handoff_destroy(h);
}

static void test_reader(uint32_t allocator, uint32_t policy, uint32_t param)
{
	struct nta_config ac = { .max_pages = 8192 };
	struct nta_arena *a = nta_arena_create(NULL, &ac);
	struct nta_pool_config pc = { .allocator = allocator, .remote_size = QUEUE };
	struct nta_pool *p = nta_pool_create(a, &pc);
	struct nta_ctl_config cc = { .policy = policy, .param = param, .max_held = 4096, .seed = 3 };
	struct nta_ctl *c = nta_ctl_create(p, a, &cc);
	struct nta_handoff *h = nta_handoff_create(HANDOFF);
	struct nta_free_reader r = { .from = h, .pool = p, .arena = a, .batch = 16 };
	struct nta_meta m[256];
	pthread_t th;
	void *rc;

	EXPECT(c && h);
	if (!c || !h)
		return;
	nta_ctl_set_handoff(c, h);
	EXPECT_EQ(pthread_create(&th, NULL, read_frees, &r), 0);
	for (int batch = 0; batch < 200; batch++) {
		memset(m, 0, sizeof(m));
		for (int i = 0; i < 256; i++) {
			m[i].ts_ns = (uint64_t)(batch * 256 + i) * 1000;
			m[i].len = (uint32_t)(64 + (batch * 256 + i) * 37 % 1437);
			m[i].flow_hash = (uint32_t)i * 2654435761u;
		}
		EXPECT_EQ(nta_ctl_handle(c, m, 256), 256);
		if (batch % 3 == 0)
			nta_pool_drain_remote(p);
		if (batch % 50 == 0)
			EXPECT_CLEAN(p, a); /* with frees posted and not yet applied */
	}
	nta_ctl_flush(c);
	nta_free_reader_stop(&r);
	while (pthread_tryjoin_np(th, &rc)) { /* the owner applies while the reader finishes */
		nta_pool_drain_remote(p);
		sched_yield();
	}
	nta_pool_drain_remote(p);
	EXPECT_EQ((intptr_t)rc, 0);

	struct nta_ctl_stats st;
	struct nta_pool_stats ps;
	nta_ctl_stats(c, &st);
	nta_pool_stats(p, &ps);
	EXPECT_EQ(st.handled, 200 * 256);
	EXPECT_EQ(st.held, 0);
	EXPECT_EQ(st.frees, st.handled);
	EXPECT_EQ(st.handed_off + st.handoff_full, st.frees);
	EXPECT(st.handed_off > 0);
	EXPECT_EQ(r.taken, st.handed_off);
	EXPECT_EQ(ps.remote.posted, st.handed_off);
	EXPECT_EQ(ps.remote.applied, st.handed_off);
	EXPECT_EQ(ps.remote.batches, r.batches);
	EXPECT_EQ(ps.remote.full, r.full_waits);
	EXPECT_EQ(ps.remote.bad, 0);
	EXPECT_EQ(ps.remote.pending, 0);
	EXPECT_EQ(ps.fragments.frags, 0);
	EXPECT(r.sum != 0); /* the reader read the records the controller wrote into the fragments */
	EXPECT_CLEAN(p, a);
	nta_ctl_destroy(c);
	nta_handoff_destroy(h);
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, NULL), 0);
	nta_arena_close(a);
}

int main(void)
{
	struct nta_free_reader bad = { 0 };

	EXPECT_EQ(nta_free_reader_run(&bad), -EINVAL);
	test_spsc();
	for (uint32_t al = NTA_POOL_NTA; al <= NTA_POOL_PAGE; al++) {
		test_reader(al, NTA_HOLD_IMMEDIATE, 0);
		test_reader(al, NTA_HOLD_RANDOM, 500);
		test_reader(al, NTA_HOLD_FLOW, 8);
	}
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
