// SPDX-License-Identifier: GPL-2.0-only
/*
 * replay.c - the built-in replayer's send loop (see nta_replay.h).
 *
 * Frames go out in batches of r->batch with one sendmmsg(2) each, straight
 * from the preloaded buffer (the iovecs point into it: no copy in user
 * space). Paced modes send, at each wake-up, every frame whose time has come
 * (at most a batch), then sleep until the next one is due: clock_nanosleep to
 * within SPIN_NS of it, then spin, so a rate holds without a syscall per frame.
 *
 * A frame the device refused (ENOBUFS: veth drops it and counts it in its
 * tx_dropped when the peer's ring is full) or a full socket buffer (EAGAIN) is
 * sent again and counted, never lost; any other error gives up on that one
 * frame, counts it in ->failed and keeps its errno. sendmmsg(2) reports an
 * error only when it is the batch's first frame: a short count means the next
 * frame was refused and the error was dropped. That refusal is counted as an
 * ENOBUFS one, unless the frame's next attempt names another error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "nta_replay.h"

#define MAX_BATCH 1024
#define SPIN_NS 50000ull

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void wait_until(uint64_t t)
{
	uint64_t now = mono_ns();

	if (t > now + SPIN_NS) {
		uint64_t s = t - SPIN_NS;
		struct timespec ts = { .tv_sec = (time_t)(s / 1000000000ull),
				       .tv_nsec = (long)(s % 1000000000ull) };

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	}
	while (mono_ns() < t)
		__builtin_ia32_pause();
}

struct cursor {
	uint64_t seq;   /* frames handed out so far, over all loops */
	uint64_t idx;   /* frame within the capture */
	uint64_t loop;
	uint64_t bytes; /* frame bytes handed out so far */
};

/* When the frame at c is due, ns after the start. */
static uint64_t due_ns(const struct nta_replay *r, const struct cursor *c, uint64_t span)
{
	switch (r->mode) {
	case NTA_REPLAY_PPS:
		return (uint64_t)((double)c->seq * 1e9 / r->rate);
	case NTA_REPLAY_MBPS:
		return (uint64_t)((double)c->bytes * 8e3 / r->rate);
	case NTA_REPLAY_TIMING:
		return (uint64_t)(((double)c->loop * (double)span + (double)r->rel_ns[c->idx]) / r->rate);
	default:
		return 0;
	}
}

static void advance(const struct nta_replay *r, struct cursor *c)
{
	c->bytes += r->lengths[c->idx];
	c->seq++;
	if (++c->idx == r->frames) {
		c->idx = 0;
		c->loop++;
	}
}

static void add(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

int nta_replay_run(struct nta_replay *r)
{
	struct mmsghdr msgs[MAX_BATCH];
	struct iovec iov[MAX_BATCH];
	struct cursor c = { 0 };
	uint64_t total, span, start;

	if (r->fd < 0 || r->batch == 0 || r->batch > MAX_BATCH || r->loops == 0 ||
	    r->mode > NTA_REPLAY_TIMING || (r->mode != NTA_REPLAY_TOPSPEED && !(r->rate > 0)) ||
	    (r->frames && (!r->blob || !r->offsets || !r->lengths || !r->rel_ns)))
		return -EINVAL;
	total = r->frames * r->loops;
	if (r->limit && r->limit < total)
		total = r->limit;
	span = r->frames ? (uint64_t)r->rel_ns[r->frames - 1] : 0;
	memset(msgs, 0, sizeof(msgs));
	start = mono_ns();
	r->start_ns = start;

	while (c.seq < total && !__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		uint32_t k = 0, off = 0;
		int refused = 0; /* the frame at off was refused by the last, short, call */
		uint64_t now;

		if (r->mode != NTA_REPLAY_TOPSPEED)
			wait_until(start + due_ns(r, &c, span));
		now = mono_ns();
		if (r->duration_ns && now - start >= r->duration_ns)
			break;
		/* every frame that is due now, up to a batch */
		do {
			iov[k].iov_base = (void *)(r->blob + r->offsets[c.idx]);
			iov[k].iov_len = r->lengths[c.idx];
			msgs[k].msg_hdr.msg_iov = &iov[k];
			msgs[k].msg_hdr.msg_iovlen = 1;
			k++;
			advance(r, &c);
		} while (k < r->batch && c.seq < total &&
			 (r->mode == NTA_REPLAY_TOPSPEED || start + due_ns(r, &c, span) <= now));

		while (off < k) {
			int n = sendmmsg(r->fd, msgs + off, k - off, 0);

			add(&r->calls, 1);
			if (n > 0) {
				uint64_t b = 0;

				for (int j = 0; j < n; j++)
					b += iov[off + j].iov_len;
				add(&r->sent, (uint64_t)n);
				add(&r->bytes, b);
				off += (uint32_t)n;
				refused = off < k;
				if (refused)
					add(&r->retried_enobufs, 1);
				continue;
			}
			if (n < 0 && errno == ENOBUFS) {
				add(&r->retried_enobufs, 1);
				sched_yield();
			} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				struct pollfd p = { .fd = r->fd, .events = POLLOUT };

				add(&r->retried_eagain, 1);
				poll(&p, 1, 10);
			} else if (n < 0 && errno == EINTR) {
				continue;
			} else {
				if (refused) /* it was this error, not a full queue */
					__atomic_store_n(&r->retried_enobufs, r->retried_enobufs - 1,
							 __ATOMIC_RELAXED);
				__atomic_store_n(&r->last_errno, n < 0 ? errno : EIO, __ATOMIC_RELAXED);
				add(&r->failed, 1);
				off++;
			}
			refused = 0;
			if (__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
				break;
		}
	}
	r->end_ns = mono_ns();
	return 0;
}
