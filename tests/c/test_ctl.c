// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * test_ctl.c - the controller's policies on synthetic metadata records,
 * under ASan and UBSan ('make ctest'). After every batch: nta_pool_check
 * and nta_check; after a flush: everything back, counters balanced.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "ctl.h"

static void clean(struct nta_pool *p, struct nta_arena *a, int line)
{
	char why[256];
	checks++;
	if (nta_pool_check(p, why, sizeof(why)) || nta_check(a, why, sizeof(why))) {
		failures++;
		fprintf(stderr, "line %d: %s\n", line, why);
	}
}

/* IMIX-sized records over 50 flows, 1 us apart */
static void records(struct nta_meta *m, size_t n, uint64_t t0)
{
	static const uint32_t imix[12] = { 64, 576, 64, 1500, 64, 576, 64, 64, 576, 64, 576, 64 };
	memset(m, 0, n * sizeof(*m));
	for (size_t i = 0; i < n; i++) {
		m[i].ts_ns = t0 + i * 1000;
		m[i].len = imix[i % 12];
		m[i].flow_hash = (uint32_t)(i % 50) * 2654435761u;
	}
}

static void run(uint32_t policy, uint32_t param, uint32_t max_held, uint64_t max_expected_held)
{
	struct nta_config ac = { .max_pages = 4096 };
	struct nta_arena *a = nta_arena_create(NULL, &ac);
	struct nta_pool *p = nta_pool_create(a, NULL);
	struct nta_ctl_config cc = { .policy = policy, .param = param, .max_held = max_held, .seed = 7 };
	struct nta_ctl *c = nta_ctl_create(p, a, &cc);
	struct nta_meta m[512];
	struct nta_ctl_stats st;
	struct nta_pool_stats ps;

	for (int batch = 0; batch < 40; batch++) {
		records(m, 512, (uint64_t)batch * 512 * 1000);
		EXPECT_EQ(nta_ctl_handle(c, m, 512), 512);
		nta_ctl_stats(c, &st);
		EXPECT(st.held <= max_expected_held);
		if (batch % 8 == 0)
			clean(p, a, __LINE__);
	}
	nta_ctl_stats(c, &st);
	EXPECT_EQ(st.handled, 40 * 512);
	EXPECT_EQ(st.alloc_fails, 0);
	EXPECT_EQ(st.frees + st.held, st.handled);
	nta_pool_stats(p, &ps);
	EXPECT_EQ(ps.fragments.frags, st.held); /* every held packet is one live fragment */
	EXPECT(st.bytes_held <= ps.fragments.frag_bytes); /* what frames asked for fits in what they got */
	if (policy == NTA_HOLD_PACKETS)
		EXPECT_EQ(st.held, param);
	EXPECT_EQ(nta_ctl_flush(c), (long)st.held);
	nta_ctl_stats(c, &st);
	EXPECT_EQ(st.held, 0);
	EXPECT_EQ(st.frees, st.handled);
	EXPECT_EQ(st.put_errors, 0);
	EXPECT_EQ(st.bytes_held, 0);
	nta_pool_stats(p, &ps);
	EXPECT_EQ(ps.fragments.frags, 0);
	clean(p, a, __LINE__);
	nta_ctl_destroy(c);
	size_t n;
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, &n), 0);
	nta_arena_close(a);
}

static void test_out_of_memory(void)
{
	struct nta_config ac = { .max_pages = 8 };
	struct nta_arena *a = nta_arena_create(NULL, &ac);
	struct nta_pool_config pc = { .cache_size = 4, .refill = 1, .ring_size = 4 };
	struct nta_pool *p = nta_pool_create(a, &pc);
	struct nta_ctl_config cc = { .policy = NTA_HOLD_PACKETS, .param = 1000 };
	struct nta_ctl *c = nta_ctl_create(p, a, &cc);
	struct nta_meta m[200];
	struct nta_ctl_stats st;

	records(m, 200, 0);
	long ok = nta_ctl_handle(c, m, 200);
	nta_ctl_stats(c, &st);
	EXPECT(st.alloc_fails > 0);
	EXPECT_EQ(ok + (long)st.alloc_fails, 200); /* every record: a fragment, or a counted failure */
	EXPECT_EQ(st.handled, 200);
	clean(p, a, __LINE__);
	nta_ctl_flush(c);
	nta_ctl_destroy(c);
	size_t n;
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, &n), 0);
	nta_arena_close(a);
}

/* A budget the policy's frames outgrow: every policy still lets go of what falls due while frames are
 * dropped (a reader reads on its own clock), so frames are kept again; handled = kept + drops by reason. */
static void test_policies_move_on_at_the_limit(uint32_t policy, uint32_t param)
{
	struct nta_config ac = { .max_pages = 256 };
	struct nta_arena *a = nta_arena_create(NULL, &ac);
	struct nta_pool_config pc = { .budget = 6 };
	struct nta_pool *p = nta_pool_create(a, &pc);
	struct nta_ctl_config cc = { .policy = policy, .param = param, .max_held = 100000, .seed = 7 };
	struct nta_ctl *c = nta_ctl_create(p, a, &cc);
	struct nta_meta m[512];
	struct nta_ctl_stats st;
	uint64_t kept_before = 0;

	for (int batch = 0; batch < 20; batch++) {
		records(m, 512, (uint64_t)batch * 512 * 1000);
		nta_ctl_handle(c, m, 512);
		nta_ctl_stats(c, &st);
		if (batch == 9)
			kept_before = st.kept;
	}
	nta_ctl_stats(c, &st);
	EXPECT(st.drops[NTA_DROP_NOMEM] > 0);
	EXPECT(st.kept - kept_before >= kept_before / 2); /* the second half kept frames too: the policy moved on */
	EXPECT_EQ(st.handled, st.kept + st.drops[NTA_DROP_NOMEM]);
	EXPECT_EQ(st.alloc_fails, st.drops[NTA_DROP_NOMEM]);
	clean(p, a, __LINE__);
	nta_ctl_flush(c);
	nta_ctl_destroy(c);
	size_t n;
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, &n), 0);
	nta_arena_close(a);
}

/* A flow limit (charged as the pool hands fragments out), two stuck flows, permitted frames to the
 * reserve: each drop by its reason, every other frame kept, the reserve given back. */
static void test_limits(void)
{
	struct nta_config ac = { .max_pages = 512, .reserve_pages = 16 };
	struct nta_arena *a = nta_arena_create(NULL, &ac);
	struct nta_pool_config pc = { .budget = 40 };
	struct nta_pool *p = nta_pool_create(a, &pc);
	struct nta_meta m[512];
	struct nta_ctl_stats st;
	struct nta_pool_stats ps;

	records(m, 512, 0);
	struct nta_ctl_config cc = { .policy = NTA_HOLD_PACKETS, .param = 50, .flow_limit = 4096, .nstuck = 2,
				     .stuck = { m[0].flow_hash, m[1].flow_hash } };
	struct nta_ctl *c = nta_ctl_create(p, a, &cc);
	for (int batch = 0; batch < 20; batch++) {
		records(m, 512, (uint64_t)batch * 512 * 1000);
		EXPECT(nta_ctl_handle(c, m, 512) > 0);
	}
	nta_ctl_stats(c, &st);
	/* two stuck flows, 1/50 of the records each: held until the end, up to their limit */
	EXPECT_EQ(st.stuck_handled, 2 * 20 * 11); /* each batch: records 0, 50, ..., 500 of flow 0; 1, ..., 501 of 1 */
	EXPECT(st.stuck_kept > 0 && st.stuck_bytes <= 2 * 4096);
	EXPECT_EQ(st.drops[NTA_DROP_FLOW_LIMIT], st.stuck_handled - st.stuck_kept);
	EXPECT_EQ(st.drops[NTA_DROP_NOMEM], 0);
	EXPECT_EQ(st.handled, st.kept + st.drops[NTA_DROP_FLOW_LIMIT]);
	EXPECT_EQ(st.flows, 50);
	clean(p, a, __LINE__);
	nta_ctl_flush(c);
	nta_ctl_destroy(c);

	/* permitted records (every third) may take the reserve once a budget of 2 pages is out */
	pc.budget = 2;
	struct nta_pool *q = nta_pool_create(a, &pc);
	struct nta_ctl_config rc = { .policy = NTA_HOLD_PACKETS, .param = 200, .reserve = 1 };
	c = nta_ctl_create(q, a, &rc);
	records(m, 512, 0);
	for (int i = 0; i < 512; i += 3)
		m[i].flags |= NTA_META_PERMIT;
	nta_ctl_handle(c, m, 512);
	nta_ctl_stats(c, &st);
	nta_pool_stats(q, &ps);
	EXPECT_EQ(st.permitted, 171);
	EXPECT(st.permitted_kept > 0 && ps.reserve.reserve_allocs > 0);
	EXPECT_EQ(st.handled, st.kept + st.drops[NTA_DROP_NOMEM] + st.drops[NTA_DROP_RESERVE_EXHAUSTED]);
	EXPECT(st.drops[NTA_DROP_NOMEM] > 0);
	EXPECT_EQ(st.permitted - st.permitted_kept, st.drops[NTA_DROP_RESERVE_EXHAUSTED]);
	EXPECT(st.peak_permitted_bytes > 0);
	clean(q, a, __LINE__);
	nta_ctl_flush(c);
	nta_pool_stats(q, &ps);
	EXPECT_EQ(ps.reserve.reserve_taken, ps.reserve.reserve_returned);
	EXPECT_EQ(ps.pages.reserve_pages, 0);
	nta_ctl_destroy(c);
	size_t n;
	EXPECT_EQ(nta_pool_destroy(q, 0, NULL, 0, &n), 0);
	EXPECT_EQ(nta_pool_destroy(p, 0, NULL, 0, &n), 0);
	nta_arena_close(a);
	struct nta_ctl_config many = { .nstuck = NTA_CTL_STUCK_MAX + 1 };
	EXPECT(nta_ctl_create(NULL, NULL, &many) == NULL && errno == EINVAL);
}

int main(void)
{
	test_limits();
	test_policies_move_on_at_the_limit(NTA_HOLD_PACKETS, 1000);
	test_policies_move_on_at_the_limit(NTA_HOLD_USEC, 1000);
	test_policies_move_on_at_the_limit(NTA_HOLD_FLOW, 20);
	test_policies_move_on_at_the_limit(NTA_HOLD_RANDOM, 1000);
	run(NTA_HOLD_IMMEDIATE, 0, 0, 0);
	run(NTA_HOLD_PACKETS, 1000, 0, 1000);
	run(NTA_HOLD_USEC, 300, 100000, 301);  /* 300 us at 1 record/us */
	run(NTA_HOLD_FLOW, 8, 0, 50 * 8);      /* 50 flows of 8 */
	run(NTA_HOLD_RANDOM, 500, 100000, 100000);
	test_out_of_memory();
	struct nta_ctl_config bad = { .policy = 99 };
	EXPECT(nta_ctl_create(NULL, NULL, &bad) == NULL && errno == EINVAL);
	printf("%d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
