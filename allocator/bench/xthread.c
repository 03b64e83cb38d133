// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xthread.c - an allocation trace with two threads, one allocator, in this
 * process.
 *
 *   xthread ALLOCATOR PATTERN TRACEFILE REPEATS [THREADS]
 *
 * ALLOCATOR: nta (a page pool whose fragments the NTA places, in an arena in
 * a memfd) | malloc (this process's: glibc, or jemalloc/tcmalloc/mimalloc
 * through LD_PRELOAD). TRACEFILE as trace.c's.
 *
 * PATTERN:
 *   producer-consumer  one thread allocates the trace's sizes in turn and
 *     hands each block to the other through a single-producer ring as deep
 *     as the trace's window; the other frees it (xmalloc-test's shape: every
 *     free is on another thread than the block's allocation), once 7/8 of a
 *     window of newer blocks are in the ring: so every allocator has between
 *     7/8 of a window and a window of blocks live, whatever its speed
 *     (freeing all it found, a consumer faster than its producer left a few
 *     blocks live, and what the allocator held then said little). The NTA's
 *     free is a remote put: posted to the pool's owner in batches of 64
 *     (one atomic operation a batch, nothing allocated), applied on the
 *     owner's next allocation, as the NTA's author meant frees on a foreign
 *     CPU to be.
 *   per-thread  each thread replays the whole trace (a window of blocks
 *     freed out of order) with blocks of its own: for the NTA, an arena and
 *     allocator of its own (per CPU, as designed); malloc's is shared.
 *
 * THREADS: producer-consumer pairs of threads (default 1), each pair with a
 * ring of its own (and for the NTA a pool and arena of its own: the producer
 * owns it); per-thread: threads (default 2). So that scaling past two CPUs
 * can be measured where more CPUs exist.
 *
 * Each block's first and last byte are written. The run is timed REPEATS
 * times, start to end of every thread; prints one line of JSON: ns per
 * alloc+free pair (producer-consumer: wall time over every pair's steps, all
 * pairs together; per-thread: wall time over one thread's steps), and the
 * peak memory the run added
 * (RssAnon + RssShmem, as trace.c), sampled with the blocks live: the most
 * of 8 samples the producer takes once its ring has filled (up to a window
 * of blocks in flight; one sample half way read whatever the consumer had
 * left in the ring at that moment, and varied by half between runs), or as
 * each thread ends its trace (per-thread). Producer-consumer also samples
 * as the producer finds its ring full (up to 8 times, as far apart), and
 * prints the bytes requested live at its samples: the most (every pair's
 * added up) and the least (one pair's). Live is what the producer
 * allocated less what the consumer has freed, which it publishes every 64
 * frees (the NTA's: as each batch is posted); with 7/8 of a window kept in
 * flight, it is between 7/8 of a window's bytes and a window's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "nta.h"

#define REMOTE_BATCH 64 /* the consumer's puts posted at once */
#define RSS_SAMPLES 8   /* producer-consumer: samples of the memory held, a read of /proc each */


struct run {
	int nta;
	uint32_t window, n;
	uint32_t sample_every; /* producer-consumer: steps between samples of the memory held */
	const uint32_t *sizes, *slots;
	const uint64_t *upto;  /* producer-consumer: bytes requested by the trace's steps before step i */
	/* producer-consumer: one pair's */
	struct nta_arena *a;
	struct nta_pool *pool;
	uint8_t *base;
	uint64_t *ring; /* blocks handed over: pointers, or the NTA's offsets */
	uint64_t mask;
	long peak_kb;   /* the process's, the most of RSS_SAMPLES samples once the ring has filled */
	uint64_t peak_live, least_live; /* bytes requested and not freed, the most and least at those samples */
	uint32_t full_samples, next_full; /* samples taken with the ring full; the step the next may be */
	uint64_t head __attribute__((aligned(64))); /* the producer's */
	uint64_t tail __attribute__((aligned(64))); /* the consumer's */
	int failed;
};

static void fail(struct run *r, const char *what, uint32_t i)
{
	fprintf(stderr, "xthread: %s at step %u\n", what, i);
	__atomic_store_n(&r->failed, 1, __ATOMIC_RELAXED);
}

/* The memory the process holds, and the bytes requested live: step i allocated, the consumer's tail freed. */
static void sample(struct run *r, uint32_t i, uint64_t tail)
{
	long kb = held_kb();
	uint64_t live = r->upto[i + 1] - r->upto[tail];

	r->peak_kb = kb > r->peak_kb ? kb : r->peak_kb;
	r->peak_live = live > r->peak_live ? live : r->peak_live;
	r->least_live = live < r->least_live ? live : r->least_live;
}

static void *produce(void *arg)
{
	struct run *r = arg;
	uint64_t head = 0, tail = 0;

	for (uint32_t i = 0; i < r->n; i++) {
		uint32_t sz = r->sizes[i];
		uint8_t *p;
		uint64_t h;
		if (r->nta) {
			int64_t off = nta_pool_alloc_frag(r->pool, sz, 0);
			if (off <= 0) {
				fail(r, "nta_pool_alloc_frag failed", i);
				return NULL;
			}
			p = r->base + off;
			h = (uint64_t)off;
		} else {
			if (!(p = malloc(sz))) {
				fail(r, "malloc failed", i);
				return NULL;
			}
			h = (uint64_t)(uintptr_t)p;
		}
		p[0] = (uint8_t)i;
		p[sz - 1] = (uint8_t)i;
		while (head - tail > r->mask) { /* the ring is full: the consumer is behind */
			tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
			if (head - tail > r->mask) {
				if (i >= r->next_full && r->full_samples < RSS_SAMPLES) { /* a window of blocks live */
					sample(r, i, tail);
					r->full_samples++;
					r->next_full = i + r->sample_every;
				}
				if (r->nta) /* the owner applies what the consumer posted meanwhile */
					nta_pool_drain_remote(r->pool);
				sched_yield();
			}
		}
		r->ring[head & r->mask] = h;
		__atomic_store_n(&r->head, ++head, __ATOMIC_RELEASE);
		if (i >= r->window && (i - r->window) % r->sample_every == 0)
			sample(r, i, __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE));
	}
	return NULL;
}

static void *consume(void *arg)
{
	struct run *r = arg;
	int64_t batch[REMOTE_BATCH];
	uint32_t nb = 0;
	uint64_t tail = 0;

	while (tail < r->n && !__atomic_load_n(&r->failed, __ATOMIC_RELAXED)) {
		uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
		const uint64_t keep = r->window - r->window / 8; /* in flight: see above */
		uint64_t upto = head == r->n ? head : head > keep ? head - keep : 0;
		if (upto <= tail) {
			sched_yield();
			continue;
		}
		for (; tail < upto; tail++) {
			uint64_t h = r->ring[tail & r->mask];
			if (!r->nta) {
				free((void *)(uintptr_t)h);
			} else {
				batch[nb++] = (int64_t)h;
				if (nb == REMOTE_BATCH || tail + 1 == r->n) {
					while (nta_pool_put_remote_bulk(r->pool, batch, nb) == -EAGAIN)
						sched_yield(); /* the queue is full until the owner's next allocation */
					nb = 0;
				}
			}
			if ((tail + 1) % REMOTE_BATCH == 0) /* freed so far (the NTA's batches end here) */
				__atomic_store_n(&r->tail, tail + 1, __ATOMIC_RELEASE);
		}
		__atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* per-thread: the trace with blocks of this thread's own */
struct own {
	const struct run *r;
	int failed;
	long peak_kb; /* the process's, when this thread's window was full at the end (its arena still open) */
};

static void *replay_own(void *arg)
{
	struct own *o = arg;
	const struct run *r = o->r;
	void **ptr = calloc(r->window, sizeof(void *));
	int64_t *off = calloc(r->window, sizeof(int64_t));
	uint32_t *held = calloc(r->window, sizeof(uint32_t));
	struct nta_arena *a = NULL;
	uint8_t *base = NULL;

	if (!ptr || !off || !held)
		goto out_fail;
	if (r->nta) {
		uint64_t maxsz = 0;
		for (uint32_t i = 0; i < r->n; i++)
			maxsz = r->sizes[i] > maxsz ? r->sizes[i] : maxsz;
		struct nta_config cfg = { .max_pages = (uint32_t)((uint64_t)r->window * ((maxsz + 4095) / 4096 + 1) * 2 + 64) };
		if (!(a = nta_arena_create(NULL, &cfg)))
			goto out_fail;
		base = nta_arena_base(a);
	}
	for (uint32_t i = 0; i < r->n; i++) {
		uint32_t s = r->slots[i], sz = r->sizes[i];
		uint8_t *p;
		if (!r->nta) {
			free(ptr[s]);
			p = ptr[s] = malloc(sz);
		} else {
			if (off[s] && nta_free(a, (uint64_t)off[s], held[s]))
				goto out_fail;
			off[s] = nta_alloc(a, sz, 0);
			if (off[s] <= 0)
				goto out_fail;
			held[s] = sz;
			p = base + off[s];
		}
		if (!p)
			goto out_fail;
		p[0] = (uint8_t)i;
		p[sz - 1] = (uint8_t)i;
	}
	o->peak_kb = held_kb();
	for (uint32_t s = 0; s < r->window; s++) {
		if (r->nta && off[s])
			nta_free(a, (uint64_t)off[s], held[s]);
		else if (!r->nta)
			free(ptr[s]);
	}
	goto out;
out_fail:
	o->failed = 1;
out:
	if (a)
		nta_arena_close(a);
	free(ptr);
	free(off);
	free(held);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: %s nta|malloc producer-consumer|per-thread TRACEFILE REPEATS [THREADS]\n", argv[0]);
		return 2;
	}
	int nta = !strcmp(argv[1], "nta"), pc = !strcmp(argv[2], "producer-consumer");
	if ((!nta && strcmp(argv[1], "malloc")) || (!pc && strcmp(argv[2], "per-thread"))) {
		fprintf(stderr, "xthread: unknown allocator %s or pattern %s\n", argv[1], argv[2]);
		return 2;
	}
	int repeats = atoi(argv[4]);
	int nthreads = argc == 6 ? atoi(argv[5]) : pc ? 1 : 2; /* pairs, or threads */
	struct trace t;
	if (repeats < 1 || nthreads < 1 || nthreads > 256 || trace_read("xthread", argv[3], &t))
		return 2;
	double *took = calloc((size_t)repeats, sizeof(double));
	uint64_t depth = 1;
	while (depth < t.window)
		depth <<= 1;
	int npairs = pc ? nthreads : 1;
	struct run *runs = aligned_alloc(64, ((size_t)npairs * sizeof(struct run) + 63) / 64 * 64);
	struct own *own = calloc((size_t)nthreads, sizeof(*own));
	pthread_t *th = calloc((size_t)nthreads * 2, sizeof(*th));
	if (!took || !runs || !own || !th)
		return 1;
	memset(runs, 0, (size_t)npairs * sizeof(struct run));
	uint64_t *upto = calloc((size_t)t.n + 1, sizeof(*upto)); /* resident before the baseline, as the rings */
	if (!upto)
		return 1;
	for (uint32_t i = 0; i < t.n; i++)
		upto[i + 1] = upto[i] + t.sizes[i];
	for (int j = 0; j < npairs; j++) {
		struct run *r = &runs[j];
		*r = (struct run){ .nta = nta, .window = t.window, .n = t.n, .sizes = t.sizes, .slots = t.slots,
				   .upto = upto, .mask = depth - 1 };
		if (!(r->ring = calloc(depth, sizeof(*r->ring))))
			return 1;
		for (volatile uint64_t i = 0; i < depth; i++) /* resident before the baseline */
			r->ring[i] = 0;
	}
	long base_kb = held_kb(), peak_kb = base_kb;
	uint64_t peak_live = 0, least_live = UINT64_MAX;
	for (int k = 0; k < repeats; k++) {
		for (int j = 0; j < nthreads; j++)
			own[j] = (struct own){ .r = &runs[0] };
		for (int j = 0; pc && j < npairs; j++) {
			struct run *r = &runs[j];
			if (nta) { /* room for the ring's blocks and the queue's, at their largest, twice over */
				struct nta_config cfg = { .max_pages = (uint32_t)(depth * 2 * 2 + 8192 + 64) };
				struct nta_pool_config pcfg = { .allocator = NTA_POOL_NTA };
				if (!(r->a = nta_arena_create(NULL, &cfg)) || !(r->pool = nta_pool_create(r->a, &pcfg))) {
					perror("xthread: arena or pool");
					return 1;
				}
				r->base = nta_arena_base(r->a);
			}
			r->head = r->tail = 0;
			r->peak_kb = 0;
			r->peak_live = 0;
			r->least_live = UINT64_MAX;
			r->full_samples = r->next_full = 0;
			r->sample_every = t.n > t.window + RSS_SAMPLES ? (t.n - t.window) / RSS_SAMPLES : 1;
			r->failed = 0;
		}
		double t0 = now_ns();
		for (int j = 0; j < nthreads; j++) {
			if (pc) {
				pthread_create(&th[2 * j], NULL, produce, &runs[j]);
				pthread_create(&th[2 * j + 1], NULL, consume, &runs[j]);
			} else {
				pthread_create(&th[j], NULL, replay_own, &own[j]);
			}
		}
		/* a producer, its pool's owner, done: this thread owns the pool now, and must apply what the
		 * consumer still posts (a queue shorter than the ring fills, and nobody else drains it) */
		for (int j = 0; j < nthreads; j++) {
			if (!pc) {
				pthread_join(th[j], NULL);
				continue;
			}
			pthread_join(th[2 * j], NULL);
			while (pthread_tryjoin_np(th[2 * j + 1], NULL)) {
				if (nta)
					nta_pool_drain_remote(runs[j].pool);
				sched_yield();
			}
		}
		took[k] = (now_ns() - t0) / ((double)t.n * (pc ? npairs : 1));
		long kb = pc ? runs[0].peak_kb : held_kb();
		int failed = 0;
		for (int j = 0; j < nthreads; j++) {
			kb = own[j].peak_kb > kb ? own[j].peak_kb : kb;
			failed |= own[j].failed;
		}
		for (int j = 0; pc && j < npairs; j++)
			failed |= runs[j].failed;
		peak_kb = kb > peak_kb ? kb : peak_kb;
		uint64_t live = 0;
		for (int j = 0; pc && j < npairs; j++) {
			live += runs[j].peak_live;
			least_live = runs[j].least_live < least_live ? runs[j].least_live : least_live;
		}
		peak_live = live > peak_live ? live : peak_live;
		if (failed) {
			fprintf(stderr, "xthread: the run failed\n");
			return 1;
		}
		for (int j = 0; pc && nta && j < npairs; j++) {
			struct run *r = &runs[j];
			char why[256] = "";
			nta_pool_drain_remote(r->pool); /* what the consumer posted last */
			struct nta_pool_stats st;
			nta_pool_stats(r->pool, &st);
			if (st.remote.applied != r->n || st.fragments.frags || nta_pool_check(r->pool, why, sizeof(why))) {
				fprintf(stderr, "xthread: after the run, pair %d: %llu of %u puts applied, %llu fragments left: %s\n",
					j, (unsigned long long)st.remote.applied, r->n, (unsigned long long)st.fragments.frags,
					why);
				return 1;
			}
			if (nta_pool_destroy(r->pool, 1000, NULL, 0, NULL)) {
				fprintf(stderr, "xthread: the pool would not close\n");
				return 1;
			}
			nta_arena_close(r->a);
		}
	}
	qsort(took, (size_t)repeats, sizeof(double), cmp_double);
	printf("{\"allocator\": \"%s\", \"pattern\": \"%s\", \"threads\": %d, \"window\": %u, \"steps\": %u, "
	       "\"ns_per_pair\": [", argv[1], argv[2], nthreads, t.window, t.n);
	for (int k = 0; k < repeats; k++)
		printf("%s%.3f", k ? ", " : "", took[k]);
	printf("], \"peak_rss_bytes\": %ld", (peak_kb - base_kb) * 1024);
	if (pc)
		printf(", \"peak_requested_bytes\": %llu, \"least_requested_bytes\": %llu", (unsigned long long)peak_live,
		       (unsigned long long)(least_live == UINT64_MAX ? 0 : least_live));
	printf("}\n");
	return 0;
}
