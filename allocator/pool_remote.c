// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_remote.c - puts from threads other than the pool's owner, posted
 * lock-free to the owner, who applies them on its next allocation (and
 * whenever it drains, and while destroy waits). Applied in the owner's
 * context, as page_pool's direct recycling is in its NAPI's: a page they
 * empty goes to the alloc cache while it has room, hot, the next page
 * handed out (to the ring, the oldest page next, it widened the memory a
 * producer-consumer run touched by a quarter).
 *
 * The queue is a bounded multi-producer, single-consumer ring of slots made
 * with the pool (nothing is allocated on the put path; a full queue refuses
 * the batch, EAGAIN, and counts it). A producer reserves room for a whole
 * batch with one compare-and-swap on the tail, then fills its slots and
 * publishes each with a release store of the slot's sequence number (plain
 * stores on x86): one atomic read-modify-write per batch. The owner reads
 * slots in order from the head while their sequence says published, hands
 * each slot back (its sequence one lap on) and moves the head once per
 * drain. A slot reserved but not yet published stops the drain there until
 * the next one. After the queue's design by D. Vyukov (bounded MPMC), with
 * the multi-slot reservation of a batch. The slots start zeroed, as mapped:
 * a producer finds room by the head, never by a slot's sequence, and 0 is no
 * position's "published" (position + 1), so a slot needs no sequence before
 * its first lap, and the queue's pages take memory only once used (their
 * mapping, not the heap's, goes back at destroy).
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "pool_internal.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int pool_remote_init(struct nta_pool *p, uint32_t size)
{
	p->remote = nta_zero_map((size_t)size * sizeof(*p->remote)); /* its pages take memory once used */
	if (!p->remote)
		return -ENOMEM;
	p->remote_mask = size - 1;
	p->remote_head = 0;
	__atomic_store_n(&p->remote_tail, 0, __ATOMIC_RELEASE);
	return 0;
}

NTA_API long nta_pool_put_remote_bulk(struct nta_pool *p, const int64_t *offs, size_t n)
{
	uint64_t t, h, size = (uint64_t)p->remote_mask + 1;
	uint32_t now;

	if (!n)
		return 0;
	if (n > size)
		return -EINVAL;
	t = __atomic_load_n(&p->remote_tail, __ATOMIC_RELAXED);
	do {
		h = __atomic_load_n(&p->remote_head_pub, __ATOMIC_ACQUIRE);
		if (t + n - h > size) {
			__atomic_fetch_add(&p->remote_full, 1, __ATOMIC_RELAXED);
			return -EAGAIN;
		}
	} while (!__atomic_compare_exchange_n(&p->remote_tail, &t, t + n, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
	now = (uint32_t)(mono_ns() >> REMOTE_TICK_SHIFT);
	/* slots t .. t+n-1 are ours: the owner has handed each back (its sequence is its position) */
	for (size_t k = 0; k < n; k++) {
		struct pool_remote_slot *s = &p->remote[(t + k) & p->remote_mask];
		s->word = (offs[k] < 0 ? REMOTE_NOT_A_BLOCK : (uint64_t)offs[k]) |
			  (k ? 0 : REMOTE_FIRST); /* the owner counts batches: no second atomic here */
		s->posted = now;
		__atomic_store_n(&s->seq, (uint32_t)(t + k + 1), __ATOMIC_RELEASE);
	}
	return (long)n;
}

NTA_API int nta_pool_put_remote(struct nta_pool *p, uint64_t off)
{
	int64_t o = (int64_t)off;
	long rc = nta_pool_put_remote_bulk(p, &o, 1);

	return rc < 0 ? (int)rc : 0;
}

NTA_API long nta_pool_drain_remote(struct nta_pool *p)
{
	uint64_t pos = p->remote_head, size = (uint64_t)p->remote_mask + 1;
	uint32_t now = 0;
	bool timed = false;
	long n = 0;

	for (;; pos++, n++) {
		struct pool_remote_slot *s = &p->remote[pos & p->remote_mask];
		if (!remote_published(s, pos))
			break; /* empty, or reserved and not yet published */
		const uint64_t word = s->word, off = remote_off(s);
		const uint32_t posted = s->posted;
		if (word & REMOTE_FIRST)
			p->st.remote.batches++;
		__atomic_store_n(&s->seq, (uint32_t)(pos + size), __ATOMIC_RELEASE); /* free for the next lap */
		if (!timed) {
			now = (uint32_t)(mono_ns() >> REMOTE_TICK_SHIFT);
			timed = true;
		}
		const int32_t waited = (int32_t)(now - posted); /* < 0: posted after this drain took its time */
		if (waited > 0 && (uint64_t)waited << REMOTE_TICK_SHIFT > p->st.remote.max_wait_ns)
			p->st.remote.max_wait_ns = (uint64_t)waited << REMOTE_TICK_SHIFT;
		if (nta_pool_put(p, off, NTA_POOL_DIRECT) == 0) /* the owner's context: a page to the cache */
			p->st.remote.applied++;
		else
			p->st.remote.bad++;
	}
	if (n) {
		p->remote_head = pos;
		__atomic_store_n(&p->remote_head_pub, pos, __ATOMIC_RELEASE);
		p->st.remote.drains++;
	}
	return n;
}

void pool_remote_counts(const struct nta_pool *p, struct nta_pool_stats *st)
{
	uint64_t tail = __atomic_load_n(&p->remote_tail, __ATOMIC_ACQUIRE);

	st->remote.posted = tail; /* every reservation is a post (a refused batch reserves nothing) */
	st->remote.pending = tail - p->remote_head;
	st->remote.full = __atomic_load_n(&p->remote_full, __ATOMIC_RELAXED);
}
