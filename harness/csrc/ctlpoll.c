// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ctlpoll.c - the controller's loop (see ctl.h): drain the metadata ring
 * into a buffer, note how long each record waited, hand the batch to the
 * per-packet work; with nothing in the ring, sleep a slice (or spin). Run
 * on a thread of its own until stopped, it never needs Python: the
 * interval lines, netlink and BPF map reads of the main thread (milliseconds
 * under load) no longer hold records back. It samples the pool itself and
 * publishes the counters under a sequence lock for the thread that prints.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

static void note_waits(struct nta_ctl_poll *p, const struct nta_meta *recs, long n, uint64_t now)
{
	for (long i = 0; i < n; i++) {
		/* bpf_ktime_get_ns() is CLOCK_MONOTONIC too */
		uint64_t wait = now > recs[i].ts_ns ? now - recs[i].ts_ns : 0, us = wait / 1000;
		if (wait > p->lat_max_ns)
			p->lat_max_ns = wait;
		p->lat_hist[us < p->lat_buckets ? us : p->lat_buckets - 1]++;
	}
}

static void publish(struct nta_ctl *c, struct nta_ctl_poll *p)
{
	struct nta_ctl_snapshot *s = &p->snap;

	__atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	s->drained = p->drained;
	nta_ctl_stats(c, &s->ctl);
	if (p->pool)
		nta_pool_stats(p->pool, &s->pool);
	__atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
}

void nta_ctl_poll_sample(struct nta_ctl *c, struct nta_ctl_poll *p)
{
	if (p->pool && p->arena && p->page_size && p->chunk_size) {
		uint64_t pages = nta_pool_counters(p->pool)->pages.pages_in_use;
		struct nta_ctl_stats st;
		struct nta_stats as;
		nta_ctl_stats(c, &st);
		nta_stats(p->arena, &as);
		if (pages) {
			p->util_samples++;
			p->util_sum += (double)st.bytes_held / ((double)pages * (double)p->page_size);
		}
		if (p->map && pages > p->map_peak_pages) {
			uint64_t cells = p->page_size / p->chunk_size, npages = as.peak_pages_committed;
			if (npages * cells > p->map_cells)
				npages = p->map_cells / cells;
			if (nta_pool_page_map(p->pool, p->map, npages) >= 0) {
				p->map_peak_pages = pages;
				p->map_pages = npages;
				long n = p->held_offs ? nta_ctl_held(c, p->held_offs, p->held_lens, p->held_max) : 0;
				p->held_n = n > 0 ? (uint64_t)n : 0;
			}
		}
	}
	publish(c, p);
}

void nta_ctl_poll_stop(struct nta_ctl_poll *p)
{
	__atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
}

void nta_ctl_poll_snapshot(const struct nta_ctl_poll *p, struct nta_ctl_snapshot *out)
{
	const struct nta_ctl_snapshot *s = &p->snap;
	uint64_t seq;

	do {
		while ((seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE)) & 1)
			__builtin_ia32_pause();
		memcpy(out, s, sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
	} while (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != seq);
}

long nta_ctl_poll(struct nta_ctl *c, struct nta_ringbuf *rb, struct nta_ctl_poll *p)
{
	const struct timespec nap = { .tv_nsec = (long)p->idle_ns };

	if (!c || (!rb && !p->xsk) || (p->xsk && !p->offs) || !p->buf || !p->max || (p->lat_hist && !p->lat_buckets) || p->idle_ns >= 1000000000ull ||
	    (p->pool && (!p->arena || !p->page_size || !p->chunk_size)) || (p->map && !p->pool))
		return -EINVAL;
	for (;;) {
		uint64_t odd = 0, now;
		long n = p->xsk ? nta_xsk_receive(p->xsk, p->buf, p->offs, p->max)
				: nta_ringbuf_drain(rb, p->buf, sizeof(*p->buf), p->max, &odd);
		p->odd += odd;
		p->passes++;
		if (n > 0) {
			now = nta_ctl_now_ns();
			if (p->lat_hist && !p->xsk) /* a frame has no XDP timestamp */
				note_waits(p, p->buf, n, now);
			if (!p->xsk) /* the socket's frames are held as they come */
				nta_ctl_handle(c, p->buf, (size_t)n);
			p->drained += (uint64_t)n;
		} else {
			now = nta_ctl_now_ns();
		}
		if (p->sample_ns && now >= p->next_sample_ns) {
			nta_ctl_poll_sample(c, p);
			p->next_sample_ns = now + p->sample_ns;
		}
		if (n > 0)
			continue; /* more may have come meanwhile */
		if (p->pool) /* frees other threads posted: applied even while no frame comes */
			nta_pool_drain_remote(p->pool);
		if (now >= p->until_ns || __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
			return 0;
		p->empty++;
		nta_ctl_idle(&nap);
	}
}
