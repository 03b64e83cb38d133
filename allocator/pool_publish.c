// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_publish.c - the pool's counters: the owner's own (nta_pool_stats), and
 * a copy published in the arena for other processes (nta pool PATH), under a
 * sequence lock, on every nta_pool_stats, refill, reap and destroy.
 */
#include <string.h>

#include "pool_internal.h"

void pool_snapshot(const struct nta_pool *p, struct nta_pool_stats *st)
{
	*st = p->st;
	st->pages.inflight = p->st.pages.hold - p->st.pages.release;
	st->budget.budget_held = st->pages.inflight - p->st.pages.reserve_pages;
	st->pages.cache_len = p->cache_len;
	st->pages.ring_len = ring_count(p);
	pool_remote_counts(p, st);
}

/* Copy the counters to our slot in the arena (a sequence lock: readers retry). */
void pool_publish(struct nta_pool *p)
{
	struct nta_pool_pub *pub = p->pub;

	__atomic_store_n(&pub->seq, pub->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	pool_snapshot(p, &pub->info.st);
	__atomic_store_n(&pub->seq, pub->seq + 1, __ATOMIC_RELEASE);
}

NTA_API int nta_pool_stats(const struct nta_pool *p, struct nta_pool_stats *st)
{
	pool_snapshot(p, st);
	pool_publish((struct nta_pool *)p);
	return 0;
}

NTA_API const struct nta_pool_stats *nta_pool_counters(const struct nta_pool *p)
{
	return &p->st;
}

#define PUB_TRIES 1000 /* a writer that died mid-publish leaves its count odd for ever */

NTA_API long nta_arena_pools(const struct nta_arena *a, struct nta_pool_info *out, size_t n)
{
	size_t k = 0;

	for (int i = 0; i < NTA_MAX_POOLS && k < n; i++) {
		const struct nta_pool_pub *pub = &a->rd->pools[i];
		uint32_t s0, s1, tries = 0;
		do {
			s0 = __atomic_load_n(&pub->seq, __ATOMIC_ACQUIRE);
			memcpy(&out[k], (const void *)&pub->info, sizeof(out[k]));
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			s1 = __atomic_load_n(&pub->seq, __ATOMIC_RELAXED);
		} while (((s0 & 1) || s0 != s1) && ++tries < PUB_TRIES);
		out[k].flags = tries < PUB_TRIES ? 0 : NTA_POOL_INFO_TORN;
		if (out[k].pid)
			k++;
	}
	return (long)k;
}
