// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ctlpoll.c - the controller's loop (see ctl.h): drain the metadata ring
 * into a buffer, note how long each record waited, hand the batch to the
 * per-packet work, until a deadline. With nothing in the ring it spins (a
 * CPU of its own: the lowest latency) or sleeps a slice (a CPU shared with
 * the sender). One call covers many batches, so Python is entered once per
 * slice, not once per batch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>

#include "ctl.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

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

long nta_ctl_poll(struct nta_ctl *c, struct nta_ringbuf *rb, struct nta_ctl_poll *p)
{
	const struct timespec nap = { .tv_nsec = (long)p->idle_ns };

	if (!c || !rb || !p->buf || !p->max || (p->lat_hist && !p->lat_buckets) || p->idle_ns >= 1000000000ull)
		return -EINVAL;
	for (;;) {
		uint64_t odd = 0;
		long n = nta_ringbuf_drain(rb, p->buf, sizeof(*p->buf), p->max, &odd);
		p->odd += odd;
		p->passes++;
		if (n > 0) {
			if (p->lat_hist)
				note_waits(p, p->buf, n, mono_ns());
			nta_ctl_handle(c, p->buf, (size_t)n);
			p->drained += (uint64_t)n;
			continue; /* more may have come meanwhile */
		}
		if (mono_ns() >= p->until_ns)
			return 0;
		p->empty++;
		if (p->idle_ns)
			nanosleep(&nap, NULL);
		else
			__builtin_ia32_pause();
	}
}
