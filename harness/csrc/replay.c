// SPDX-License-Identifier: GPL-2.0-only
/*
 * replay.c - the built-in replayer's send loop (see traffic.h).
 *
 * Paced modes send, at each wake-up, every frame whose time has come (at most
 * a batch), then sleep until the next one is due: clock_nanosleep to within
 * SPIN_NS of it, then spin, so a rate holds without a syscall per frame. A
 * batch goes out one of two ways:
 *
 * - NTA_REPLAY_SENDMMSG: one sendmmsg(2) per batch, the iovecs pointing
 *   straight into the preloaded buffer.
 * - NTA_REPLAY_TX_RING: a PACKET_TX_RING (TPACKET_V2) mapped here; the batch
 *   is copied into free slots, marked for sending, and one send(2) with
 *   MSG_DONTWAIT hands all of them to the kernel, which attaches the slots'
 *   pages to the skbs instead of copying them. A slot is free again (and its
 *   frame counted as sent) when the kernel has freed the skb.
 * - NTA_REPLAY_XDP: one BPF_PROG_RUN of nta_xdp_gen (bpf/) with
 *   BPF_F_TEST_XDP_LIVE_FRAMES and repeat = the batch: the kernel makes a live
 *   frame per run, the program writes the next frame of this sender's list into
 *   it from a BPF map and redirects it out of the device, with no skb. The
 *   program keeps the sender's place and counts; after each call the loop reads
 *   them back and follows the program (a signal ends a call early).
 *
 *
 * A frame the device refused (ENOBUFS: veth drops it and counts it in its
 * tx_dropped when the peer's ring is full) or a full socket buffer (EAGAIN) is
 * sent again and counted, never lost; any other error gives up on that one
 * frame, counts it in ->failed and keeps its errno. sendmmsg(2) reports an
 * error only when it is the batch's first frame: a short count means the next
 * frame was refused and the error was dropped. That refusal is counted as an
 * ENOBUFS one, unless the frame's next attempt names another error. The TX
 * ring keeps a refused frame queued at its head (tpacket_snd) and says ENOBUFS
 * once per refusal; the next send(2) starts with it again.
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nta_shared.h"
#include "traffic.h"

#define MAX_BATCH 1024      /* frames per sendmmsg(2) or TX ring send */
#define MAX_XDP_BATCH 65536 /* runs per BPF_PROG_RUN */
/* Live frames the kernel makes and flushes at a time: veth's peer ring holds 256, and a flush of 256
 * into it overflows it at full rate where one of 64 (the kernel's default) does not. */
#define XDP_KERNEL_BATCH 64
#define SPIN_NS 50000ull
/* A paced xdp sender (nta_xdp_gen.c, NTA_GEN_PACE): a call is made this much before its first frame is due
 * (about a call's set-up: its runs spin the rest), and a gap this long ends a call (room for the next
 * call's set-up and tear-down, which cost 14 us here). */
#define XDP_LEAD_NS 20000ull
#define XDP_BREAK_NS 40000ull
#define SLICE_NS 10000000ull
#define BACKOFF_NS 5000ull

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleep (in slices of at most SLICE_NS, so a stop is seen soon) then spin until t; false if stopped. */
static int wait_until(uint64_t t, const int32_t *stop)
{
	uint64_t now;

	while ((now = mono_ns()) + SPIN_NS < t) {
		uint64_t s = t - SPIN_NS < now + SLICE_NS ? t - SPIN_NS : now + SLICE_NS;
		struct timespec ts = { .tv_sec = (time_t)(s / 1000000000ull),
				       .tv_nsec = (long)(s % 1000000000ull) };

		if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED))
			return 0;
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
	while (mono_ns() < t)
		__builtin_ia32_pause();
	return 1;
}

/* After ENOBUFS: the peer's ring was full. Trying again at once only hammers the ring its consumer is
 * draining; wait about as long as the consumer takes for a few frames. */
static void backoff(void)
{
	wait_until(mono_ns() + BACKOFF_NS, NULL);
}

struct cursor {
	uint64_t seq;   /* frames handed out so far, over all loops */
	uint64_t idx;   /* frame within the capture */
	uint64_t loop;
	uint64_t bytes; /* frame bytes handed out so far */
};

/* The capture frame that is this sender's i-th (all of them, or those of ->index). */
static uint64_t frame_at(const struct nta_replay *r, uint64_t i)
{
	return r->index ? r->index[i] : i;
}

static void advance(const struct nta_replay *r, struct cursor *c);

/* --unique-flows: frame f, copied to to, its addresses moved for loop k (nta_shared.h: nta_unique_ip). */
static void unique_copy(const struct nta_replay *r, uint64_t f, uint8_t *to, uint32_t k)
{
	const uint32_t len = r->lengths[f], l3 = r->l3[f];
	const uint32_t so = l3 + (r->ipver[f] == 4 ? 12 : 20), dof = l3 + (r->ipver[f] == 4 ? 16 : 36);
	uint32_t a, b;

	memcpy(to, r->blob + r->offsets[f], len);
	memcpy(&a, to + so, 4);
	memcpy(&b, to + dof, 4);
	a = ntohl(a), b = ntohl(b);
	nta_unique_ip(&a, &b, k);
	a = htonl(a), b = htonl(b);
	memcpy(to + so, &a, 4);
	memcpy(to + dof, &b, 4);
}

/* When the frame at c is due, ns after the start. */
static uint64_t due_ns(const struct nta_replay *r, const struct cursor *c, uint64_t span)
{
	switch (r->mode) {
	case NTA_REPLAY_PPS:
		return (uint64_t)((double)c->seq * 1e9 / r->rate);
	case NTA_REPLAY_MBPS:
		return (uint64_t)((double)c->bytes * 8e3 / r->rate);
	case NTA_REPLAY_TIMING:
		return (uint64_t)(((double)c->loop * (double)span + (double)r->rel_ns[frame_at(r, c->idx)]) /
				  r->rate);
	default:
		return 0;
	}
}

long nta_replay_gaps(const struct nta_replay *r, uint64_t *gaps)
{
	struct cursor c = { 0 };
	uint64_t prev = 0, first_of_next;

	if (!r->frames || r->mode == NTA_REPLAY_TOPSPEED || r->mode > NTA_REPLAY_TIMING ||
	    r->rate <= 0)
		return -EINVAL;
	for (uint64_t k = 0; k < r->frames; k++) { /* the first loop: gap k is from frame k - 1 to frame k */
		uint64_t due = due_ns(r, &c, r->span_ns);
		gaps[k] = k ? due - prev : 0;
		prev = due;
		advance(r, &c);
	}
	first_of_next = due_ns(r, &c, r->span_ns); /* the next loop's first frame, after the last one */
	gaps[0] = first_of_next - prev;
	return (long)r->frames;
}

static void advance(const struct nta_replay *r, struct cursor *c)
{
	c->bytes += r->lengths[frame_at(r, c->idx)];
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

static void send_mmsg(struct nta_replay *r, struct mmsghdr *msgs, struct iovec *iov, uint32_t k)
{
	uint32_t off = 0;
	int refused = 0; /* the frame at off was refused by the last, short, call */

	for (uint32_t j = 0; j < k; j++) {
		msgs[j].msg_hdr.msg_iov = &iov[j];
		msgs[j].msg_hdr.msg_iovlen = 1;
	}
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
			backoff();
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd p = { .fd = r->fd, .events = POLLOUT };

			add(&r->retried_eagain, 1);
			poll(&p, 1, 10);
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			if (refused) /* it was this error, not a full queue */
				__atomic_store_n(&r->retried_enobufs, r->retried_enobufs - 1, __ATOMIC_RELAXED);
			__atomic_store_n(&r->last_errno, n < 0 ? errno : EIO, __ATOMIC_RELAXED);
			add(&r->failed, 1);
			off++;
		}
		refused = 0;
		if (__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
			return;
	}
}

/* --- the TX ring ---------------------------------------------------------- */

#define RING_BYTES (4u << 20)
#define TX_DATA_OFF (TPACKET2_HDRLEN - sizeof(struct sockaddr_ll))

struct txring {
	uint8_t *map;
	size_t map_len;
	uint32_t frame_size, frame_nr, block_size, per_block;
	uint32_t head;    /* next slot to fill */
	uint32_t oldest;  /* oldest slot filled and not yet seen free again */
	uint32_t used;    /* slots between oldest and head */
	uint32_t *lens;   /* per slot: the frame's length */
};

static struct tpacket2_hdr *slot(struct txring *t, uint32_t i)
{
	/* frames do not straddle blocks: a block's tail may be slack (packet_lookup_frame) */
	return (struct tpacket2_hdr *)(t->map + (size_t)(i / t->per_block) * t->block_size +
				       (size_t)(i % t->per_block) * t->frame_size);
}

static int ring_open(struct nta_replay *r, struct txring *t)
{
	struct tpacket_req req = { 0 };
	uint32_t maxlen = 64, block = 1u << 16;
	int v = TPACKET_V2, one = 1;

	for (uint64_t i = 0; i < r->frames; i++)
		if (r->lengths[frame_at(r, i)] > maxlen)
			maxlen = r->lengths[frame_at(r, i)];
	t->frame_size = (uint32_t)((TX_DATA_OFF + maxlen + TPACKET_ALIGNMENT - 1) & ~(TPACKET_ALIGNMENT - 1));
	while (block < t->frame_size)
		block <<= 1;
	req.tp_block_size = block;
	req.tp_block_nr = block >= RING_BYTES ? 2 : RING_BYTES / block;
	req.tp_frame_size = t->frame_size;
	req.tp_frame_nr = (block / t->frame_size) * req.tp_block_nr;
	t->frame_nr = req.tp_frame_nr;
	t->block_size = block;
	t->per_block = block / t->frame_size;
	/* PACKET_LOSS: a malformed slot is skipped rather than blocking the ring (frames were checked) */
	if (setsockopt(r->fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) ||
	    setsockopt(r->fd, SOL_PACKET, PACKET_LOSS, &one, sizeof(one)) ||
	    setsockopt(r->fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)))
		return -errno;
	t->map_len = (size_t)block * req.tp_block_nr;
	t->map = mmap(NULL, t->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (t->map == MAP_FAILED)
		return -errno;
	t->lens = calloc(t->frame_nr, sizeof(*t->lens));
	if (!t->lens) {
		munmap(t->map, t->map_len);
		return -ENOMEM;
	}
	return 0;
}

static void ring_close(struct txring *t)
{
	if (t->map && t->map != MAP_FAILED)
		munmap(t->map, t->map_len);
	free(t->lens);
}

/* Count the frames whose slots the kernel has given back, oldest first. */
static void ring_reap(struct nta_replay *r, struct txring *t)
{
	uint64_t n = 0, b = 0;

	while (t->used) {
		struct tpacket2_hdr *h = slot(t, t->oldest);

		/* given back: AVAILABLE, perhaps with timestamp flags (tpacket_destruct_skb) */
		if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) &
		    (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING | TP_STATUS_WRONG_FORMAT))
			break;
		n++;
		b += t->lens[t->oldest];
		t->oldest = (t->oldest + 1) % t->frame_nr;
		t->used--;
	}
	if (n) {
		add(&r->sent, n);
		add(&r->bytes, b);
	}
}

/* Ask the kernel to send what is marked. 0, or -errno when it refuses for good (a device that is down
 * or gone): then the marked frames would never go out. */
static int ring_kick(struct nta_replay *r)
{
	for (;;) {
		ssize_t n = send(r->fd, NULL, 0, MSG_DONTWAIT);

		add(&r->calls, 1);
		if (n >= 0)
			return 0;
		if (errno == ENOBUFS) { /* the head frame was dropped and stays queued */
			add(&r->retried_enobufs, 1);
			backoff();
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) { /* socket buffer full: skbs in flight */
			add(&r->retried_eagain, 1);
			return 0;
		}
		__atomic_store_n(&r->last_errno, errno, __ATOMIC_RELAXED);
		return -errno;
	}
}

static int ring_wait(struct nta_replay *r, struct txring *t)
{
	struct pollfd p = { .fd = r->fd, .events = POLLOUT };
	int err = ring_kick(r);

	ring_reap(r, t);
	if (!err && (t->used == t->frame_nr || (t->used && !__atomic_load_n(&r->stop, __ATOMIC_RELAXED))))
		poll(&p, 1, 1);
	return err;
}

/*
 * The slots are reaped only once the ring is half full: the kernel frees a slot from the receiving
 * CPU (tpacket_destruct_skb), and reading the status of the slot it is freeing right now, frame
 * after frame, bounced that cache line between the CPUs (perf: tpacket_destruct_skb at 8% of the
 * NAPI thread, and a third fewer frames a second).
 */
static int send_ring(struct nta_replay *r, struct txring *t, const struct iovec *iov, uint32_t k)
{
	int err;

	if (t->used + k > t->frame_nr / 2)
		ring_reap(r, t);
	for (uint32_t j = 0; j < k; j++) {
		struct tpacket2_hdr *h;

		while (t->used == t->frame_nr) {
			if (__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
				return 0;
			if ((err = ring_wait(r, t)))
				return err;
		}
		h = slot(t, t->head);
		memcpy((uint8_t *)h + TX_DATA_OFF, iov[j].iov_base, iov[j].iov_len);
		h->tp_len = (uint32_t)iov[j].iov_len;
		t->lens[t->head] = (uint32_t)iov[j].iov_len;
		__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
		t->head = (t->head + 1) % t->frame_nr;
		t->used++;
	}
	return ring_kick(r);
}

/* --- XDP live frames ------------------------------------------------------------ */

struct xdpsend {
	struct nta_gen_state at_start; /* the program's counts for this sender when the run began */
	struct nta_gen_state last;     /* and after the last call: only this sender's calls change them */
	uint64_t *due_map;             /* paced: nta_gen_due, mmapped ... */
	size_t due_len;
	uint64_t *due;                 /* ... and this CPU's ring in it (NULL: each call is timed, not each run) */
	struct nta_gen_state *all;     /* a lookup's buffer: one per possible CPU */
};

/* This sender's state: its CPU's copy of the per-CPU map (a lookup returns every CPU's). */
static int xdp_state(const struct nta_replay *r, struct xdpsend *x, struct nta_gen_state *st)
{
	const uint32_t key = 0;

	if (bpf_map_lookup_elem(r->state_fd, &key, x->all))
		return -errno;
	*st = x->all[r->cpu];
	return 0;
}

static int xdp_open(struct nta_replay *r, struct xdpsend *x)
{
	int ncpu = libbpf_num_possible_cpus(), err;

	if (r->prog_fd < 0 || r->state_fd < 0 || ncpu <= 0 || r->cpu >= (uint32_t)ncpu)
		return -EINVAL;
	if (!(x->all = calloc((size_t)ncpu, sizeof(*x->all))))
		return -ENOMEM;
	if (r->netns_fd >= 0 && setns(r->netns_fd, CLONE_NEWNET)) /* this thread only: the device's namespace */
		return -errno;
	if ((err = xdp_state(r, x, &x->at_start)))
		return err;
	x->last = x->at_start;
	if (r->mode != NTA_REPLAY_TOPSPEED && r->due_fd >= 0) {
		if (r->cpu >= r->due_cpus)
			return -EINVAL;
		x->due_len = (size_t)r->due_cpus * NTA_GEN_PACE_DEPTH * sizeof(uint64_t);
		x->due_map = mmap(NULL, x->due_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->due_fd, 0);
		if (x->due_map == MAP_FAILED) {
			x->due_map = NULL;
			return -errno;
		}
		x->due = x->due_map + (size_t)r->cpu * NTA_GEN_PACE_DEPTH;
	}
	return 0;
}

static void xdp_close(struct xdpsend *x)
{
	if (x->due_map)
		munmap(x->due_map, x->due_len);
	free(x->all);
}

/*
 * The kernel batch of a paced call of k frames, due from first to last: the frames of a batch go to the
 * device together, flushed once its last run has waited for its frame, so a batch takes as many frames as
 * fit in span ns of the schedule at the call's mean gap (a power of two up to XDP_KERNEL_BATCH, at most
 * k; one with a span of 0, unless all are due at once). A frame leaves when its batch's last is due, up
 * to the span after its own time, never before it.
 */
uint32_t nta_replay_pace_batch(uint64_t first, uint64_t last, uint32_t k, uint64_t span)
{
	uint32_t b = 1;

	while (b < XDP_KERNEL_BATCH && 2 * b <= k && 2 * b * (last - first) <= span * (k - 1))
		b *= 2;
	return b;
}

/*
 * The span of a paced sender's batches, from how far behind its schedule each call starts (now against
 * its first frame's due time). It starts at 0, a frame a batch, timed as exactly as the program waits
 * (gap error p99 0.08 us at 3 Mpps here). A sender that cannot keep up falls further behind at each call
 * (one that can starts each call a call's set-up and tear-down late at most, 14-28 us here, and no later
 * than the call before): after NTA_PACE_LATE calls in a row each more than XDP_BREAK_NS behind and further
 * than the one before, the span becomes NTA_PACE_SPAN_FIRST_NS, then doubles, up to NTA_PACE_SPAN_MOST_NS.
 * One frame a batch held 3.0 Mpps here; 4 Mpps held in batches of up to 8, 5 Mpps in batches of 64.
 */
uint64_t nta_replay_pace_step(struct nta_pace *pc, uint64_t now, uint64_t first_due)
{
	const uint64_t behind = now > first_due ? now - first_due : 0;

	if (behind > XDP_BREAK_NS && behind > pc->behind) {
		if (++pc->late == NTA_PACE_LATE && pc->span < NTA_PACE_SPAN_MOST_NS) {
			pc->span = pc->span ? 2 * pc->span : NTA_PACE_SPAN_FIRST_NS;
			pc->late = 0;
		}
	} else {
		pc->late = 0;
	}
	pc->behind = behind;
	return pc->span;
}

/* Run the program k times, in kernel batches of batch; the counters as the program kept them; *ran: how
 * many it ran. */
static int send_xdp(struct nta_replay *r, struct xdpsend *x, uint32_t k, uint32_t batch, uint64_t *ran)
{
	static const uint8_t frame[64]; /* data_in: each run rewrites the frame whole */
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame, .data_size_in = sizeof(frame), .repeat = k,
		    .batch_size = batch,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES);
	struct nta_gen_state st;
	int err;

	if (bpf_prog_test_run_opts(r->prog_fd, &o) && errno != EINTR)
		__atomic_store_n(&r->last_errno, errno, __ATOMIC_RELAXED);
	add(&r->calls, 1);
	if ((err = xdp_state(r, x, &st)))
		return err;
	*ran = st.runs - x->last.runs;
	x->last = st;
	__atomic_store_n(&r->sent, st.sent - x->at_start.sent, __ATOMIC_RELAXED);
	__atomic_store_n(&r->bytes, st.bytes - x->at_start.bytes, __ATOMIC_RELAXED);
	__atomic_store_n(&r->failed, st.failed - x->at_start.failed, __ATOMIC_RELAXED);
	return 0;
}

int nta_replay_run(struct nta_replay *r)
{
	struct mmsghdr msgs[MAX_BATCH];
	struct iovec iov[MAX_BATCH];
	struct txring ring = { 0 };
	struct xdpsend xs = { 0 };
	struct cursor c = { 0 };
	uint64_t total, span, start, give_up;
	int err;

	if ((r->fd < 0 && r->method != NTA_REPLAY_XDP) || r->batch == 0 ||
	    r->batch > (r->method == NTA_REPLAY_XDP ? MAX_XDP_BATCH : MAX_BATCH) || r->loops == 0 ||
	    r->mode > NTA_REPLAY_TIMING || r->method > NTA_REPLAY_XDP ||
	    (r->mode != NTA_REPLAY_TOPSPEED && !(r->rate > 0)) ||
	    (r->frames && (!r->blob || !r->offsets || !r->lengths || !r->rel_ns)) ||
	    (r->unique && r->method != NTA_REPLAY_XDP && (!r->l3 || !r->ipver)))
		return -EINVAL;
	/* --unique-flows on a socket: a frame of a later loop goes out of a copy in the batch's scratch */
	uint8_t *scratch = NULL;
	uint32_t frame_max = 0;
	if (r->unique && r->method != NTA_REPLAY_XDP) {
		for (uint64_t i = 0; i < r->frames; i++)
			if (r->lengths[frame_at(r, i)] > frame_max)
				frame_max = r->lengths[frame_at(r, i)];
		if (!(scratch = malloc((size_t)r->batch * frame_max + 1)))
			return -ENOMEM;
	}
	if (r->method == NTA_REPLAY_TX_RING && (err = ring_open(r, &ring))) {
		free(scratch);
		return err;
	}
	if (r->method == NTA_REPLAY_XDP && (err = xdp_open(r, &xs))) {
		xdp_close(&xs);
		return err;
	}
	total = r->frames * r->loops;
	if (r->limit && r->limit < total)
		total = r->limit;
	span = r->span_ns;
	memset(msgs, 0, sizeof(msgs));
	/* A sleep may end up to the thread's timer slack late (50 us by default): more than the spin after
	 * it covers. This thread's slack is 1 ns while it sends. */
	const long slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	prctl(PR_SET_TIMERSLACK, 1ul, 0, 0, 0);
	start = mono_ns();
	r->start_ns = start;
	struct nta_pace pace = { 0 }; /* paced xdp: see nta_replay_pace_step() */

	while (c.seq < total && !__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		uint32_t k = 0;
		uint64_t now;

		if (r->mode != NTA_REPLAY_TOPSPEED) {
			uint64_t due = start + due_ns(r, &c, span);

			if (r->duration_ns && due > start + r->duration_ns)
				due = start + r->duration_ns; /* the end comes first */
			if (!wait_until(xs.due ? due - XDP_LEAD_NS : due, &r->stop)) /* paced runs wait in the kernel */
				break;
		}
		now = mono_ns();
		if (r->duration_ns && now - start >= r->duration_ns)
			break;
		struct cursor at = c;
		uint64_t first_due = 0, last_due = 0;
		const uint32_t most = xs.due && r->batch > NTA_GEN_PACE_DEPTH ? NTA_GEN_PACE_DEPTH : r->batch;
		/* every frame that is due now, up to a batch; paced xdp runs, also those that follow closely */
		do {
			if (xs.due) { /* this run's due time, where the program looks for it */
				xs.due[(xs.last.runs + k) & (NTA_GEN_PACE_DEPTH - 1)] = last_due = start + due_ns(r, &c, span);
				first_due = k ? first_due : last_due;
			}
			if (r->method != NTA_REPLAY_XDP) { /* the program has the frames: only how many */
				uint64_t f = frame_at(r, c.idx);

				iov[k].iov_base = (void *)(r->blob + r->offsets[f]);
				iov[k].iov_len = r->lengths[f];
				if (r->unique && c.loop && r->ipver[f]) { /* loop c.loop's addresses, in the batch's copy */
					unique_copy(r, f, scratch + (size_t)k * frame_max, (uint32_t)c.loop);
					iov[k].iov_base = scratch + (size_t)k * frame_max;
				} else if (r->unique && c.loop) {
					add(&r->unchanged, 1);
				}
			}
			k++;
			advance(r, &c);
		} while (k < most && c.seq < total &&
			 (r->mode == NTA_REPLAY_TOPSPEED || start + due_ns(r, &c, span) <= now ||
			  (xs.due && start + due_ns(r, &c, span) <= last_due + XDP_BREAK_NS &&
			   (!r->duration_ns || due_ns(r, &c, span) <= r->duration_ns))));
		if (r->method == NTA_REPLAY_XDP) {
			uint64_t ran = 0;
			const uint32_t batch = xs.due ? nta_replay_pace_batch(first_due, last_due, k,
									      nta_replay_pace_step(&pace, now, first_due))
						      : k < XDP_KERNEL_BATCH ? k : XDP_KERNEL_BATCH;
			if (batch > r->kernel_batch)
				__atomic_store_n(&r->kernel_batch, batch, __ATOMIC_RELAXED);
			if ((err = send_xdp(r, &xs, k, batch, &ran))) {
				__atomic_store_n(&r->last_errno, -err, __ATOMIC_RELAXED);
				break;
			}
			for (c = at; ran--;) /* the program's place, not ours: a call may end early */
				advance(r, &c);
		} else if (r->method == NTA_REPLAY_SENDMMSG) {
			send_mmsg(r, msgs, iov, k);
		} else if ((err = send_ring(r, &ring, iov, k))) {
			/* the kernel will send nothing more: what the ring holds and what is left have failed */
			add(&r->failed, total - c.seq);
			break;
		}
	}
	if (r->method == NTA_REPLAY_TX_RING) {
		/* what the ring still holds goes out (or, when stopped, gets a second to) */
		give_up = mono_ns() + 1000000000ull;
		err = 0;
		while (ring.used && !err && (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED) || mono_ns() < give_up))
			err = ring_wait(r, &ring);
		add(&r->failed, ring.used);
		ring_close(&ring);
	}
	xdp_close(&xs);
	free(scratch);
	r->end_ns = mono_ns();
	if (slack > 0)
		prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
	return 0;
}
