// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * handoff.c - a controller hands the fragments its hold policy lets go to a
 * reader on another CPU, as softirq hands a socket's reader its packets; the
 * reader reads each and frees it, posting the frees to the fragment's pool
 * through the pool's lock-free remote queue (nta_pool_put_remote_bulk: one
 * atomic operation a batch, nothing allocated). The owner applies them on
 * its next allocation, or when its loop finds its ring empty (ctlpoll.c).
 *
 * The handoff is a bounded single-producer, single-consumer ring of
 * offsets: the controller writes a slot and publishes its tail with a
 * release store; the reader takes what is published up to a batch and
 * publishes its head back. Each index sits on a cache line of its own, with
 * the other side's last value cached beside it: the producer reads the
 * consumer's line only when its view says full, the consumer the
 * producer's only when it knows of fewer than a batch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

struct nta_handoff {
	int64_t *slots;
	uint64_t mask;
	uint64_t tail __attribute__((aligned(64))); /* the producer's */
	uint64_t head_seen;                          /* its last read of head */
	uint64_t head __attribute__((aligned(64))); /* the consumer's */
	uint64_t tail_seen;                          /* its last read of tail */
};

struct nta_handoff *nta_handoff_create(uint32_t size)
{
	struct nta_handoff *h;

	if (size < 2 || size & (size - 1)) {
		errno = EINVAL;
		return NULL;
	}
	if (posix_memalign((void **)&h, 64, sizeof(*h)))
		return errno = ENOMEM, NULL;
	memset(h, 0, sizeof(*h));
	if (!(h->slots = calloc(size, sizeof(*h->slots)))) {
		free(h);
		return errno = ENOMEM, NULL;
	}
	h->mask = size - 1;
	return h;
}

void nta_handoff_destroy(struct nta_handoff *h)
{
	if (!h)
		return;
	free(h->slots);
	free(h);
}

int nta_handoff_push(struct nta_handoff *h, int64_t off)
{
	uint64_t t = h->tail;

	if (t - h->head_seen > h->mask) {
		h->head_seen = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
		if (t - h->head_seen > h->mask)
			return -EAGAIN;
	}
	h->slots[t & h->mask] = off;
	__atomic_store_n(&h->tail, t + 1, __ATOMIC_RELEASE);
	return 0;
}

long nta_handoff_take(struct nta_handoff *h, int64_t *offs, size_t max)
{
	uint64_t hd = h->head, n;

	if (h->tail_seen - hd < max) /* fewer known than wanted: look again */
		h->tail_seen = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
	n = h->tail_seen - hd;
	if (n > max)
		n = max;
	for (uint64_t k = 0; k < n; k++)
		offs[k] = h->slots[(hd + k) & h->mask];
	__atomic_store_n(&h->head, hd + n, __ATOMIC_RELEASE);
	return (long)n;
}

uint64_t nta_handoff_queued(const struct nta_handoff *h)
{
	return __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE) - __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
}

void nta_free_reader_stop(struct nta_free_reader *r)
{
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
}

long nta_free_reader_run(struct nta_free_reader *r)
{
	const struct timespec nap = { .tv_nsec = (long)r->idle_ns };
	int64_t offs[NTA_FREE_READER_BATCH];
	size_t batch = r->batch ? r->batch : NTA_FREE_READER_BATCH;
	const uint8_t *base = r->arena ? nta_arena_base(r->arena) : NULL;

	if (!r->from || !r->pool || !r->arena || batch > NTA_FREE_READER_BATCH || r->idle_ns >= 1000000000ull)
		return -EINVAL;
	for (;;) {
		long n = nta_handoff_take(r->from, offs, batch);
		if (n > 0) {
			for (long k = 0; k < n; k++) /* the reader reads what it was handed: its first line */
				r->sum += *(const volatile uint64_t *)(base + offs[k]);
			long rc;
			while ((rc = nta_pool_put_remote_bulk(r->pool, offs, (size_t)n)) == -EAGAIN) {
				r->full_waits++; /* the owner has not applied enough yet: wait for it */
				nta_ctl_idle(&nap);
			}
			if (rc < 0)
				return rc;
			r->taken += (uint64_t)n;
			r->batches++;
			continue;
		}
		if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && !nta_handoff_queued(r->from))
			return 0;
		r->empty++;
		nta_ctl_idle(&nap);
	}
}
