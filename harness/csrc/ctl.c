// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ctl.c - the controller's per-packet work, one call per batch: for every
 * metadata record, a fragment of the frame's length from the device's pool,
 * the record written into it (so the memory is really touched), held under
 * a lifetime policy and put back when due. Frees out of allocation order
 * are what makes fragmentation real:
 *
 *   NTA_HOLD_IMMEDIATE  put at once
 *   NTA_HOLD_PACKETS    held for the next N packets (a FIFO)
 *   NTA_HOLD_USEC       held for T microseconds of the records' own clock
 *   NTA_HOLD_FLOW       a per-flow queue of depth K, as a socket's receive
 *                       queue: a flow's oldest goes when its K+1th arrives
 *                       (kept or not: a frame is read K of its flow later)
 *   NTA_HOLD_RANDOM     a lifetime drawn per packet, geometric with mean N
 *                       packets (a seeded generator: runs repeat)
 *
 * At the limit (ctl.h's config): a frame is dropped, in one place (drop(), by reason, counted), when
 * its flow holds its limit already, when the pool has no memory for it (a permitted frame may then
 * take the reserve, and is dropped only when that is out too), or when it landed in reserve memory
 * without permission (AF_XDP: buffers are posted before their frames are known). A stuck flow's frames
 * are held until the end, whatever the policy. handled = kept + drops, exactly.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ctl_flows.h"
#include "nta_shared.h"

#define FLOW_BUCKETS 4096
#define unlikely(x) __builtin_expect(!!(x), 0)

struct held {
	int64_t off;
	uint64_t due;    /* packet number or ns, by policy */
	uint32_t len;    /* bytes the frame asked for */
	uint32_t charge; /* bytes its fragment takes (against its flow's limit) */
	uint32_t flow;   /* its flow hash */
	uint8_t permit;  /* NTA_META_PERMIT */
	uint8_t pad[3];
};

struct nta_ctl {
	struct nta_pool *pool;
	const struct nta_pool_stats *pc; /* the pool's counters, in place */
	struct nta_arena *arena;
	struct nta_ctl_config cfg;
	struct nta_ctl_stats st;
	/* FIFO (packets, usec) */
	struct held *fifo;
	size_t head, tail, cap;
	/* per flow: FLOW_BUCKETS rings of K */
	struct held *flows;
	uint32_t *flow_len, *flow_head;
	uint64_t *flow_seen; /* arrivals of each bucket's flows, kept or not */
	/* random: a binary min-heap on due */
	struct held *heap;
	size_t nheap, heap_cap;
	uint64_t rng;
	uint64_t life;    /* random: the lifetime drawn for the frame that arrived last (kept or not: a frame's
	                   * lifetime is its arrival's, whatever memory the allocator left for it) */
	uint64_t packets;
	struct nta_handoff *handoff; /* frees go to a reader (handoff.c); NULL: put here */
	const uint64_t *posted;      /* buffers of the pool holding no frame yet (xsk.c); NULL: none */
	/* replay timing from the records (nta_ctl_set_timing); NULL: not timed */
	struct nta_timing *timing;
	const uint64_t *gaps;
	uint64_t *timing_hist;
	/* flows, kept with a flow limit or stuck flows (else flows.t is NULL), and the stuck flows' frames */
	struct nta_flows ftab;
	struct held *stuck;
	size_t nstuck, stuck_cap;
};

static uint64_t next_rand(struct nta_ctl *c)
{
	uint64_t x = c->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return c->rng = x;
}

/* Let go of h: hand it to the reader (with a handoff that has room), or put it back here. */
static void release(struct nta_ctl *c, struct held h)
{
	bool handed = c->handoff && nta_handoff_push(c->handoff, h.off) == 0;

	if (c->handoff && !handed)
		c->st.handoff_full++;
	if (!handed && nta_pool_put(c->pool, (uint64_t)h.off, NTA_POOL_DIRECT) != 0) {
		c->st.put_errors++;
		return;
	}
	c->st.handed_off += handed;
	c->st.frees++;
	c->st.held--;
	c->st.bytes_held -= h.len;
	if (h.permit)
		c->st.permitted_bytes_held -= h.len;
	if (c->ftab.t) {
		struct nta_flow *f = nta_flows_find(&c->ftab, h.flow);
		if (f)
			f->bytes -= h.charge;
		if (f && f->stuck)
			c->st.stuck_bytes -= h.charge;
	}
}

static void release_due(struct nta_ctl *c, const struct nta_meta *m);

/* The one place a frame is dropped: counted by its reason; its fragment, when it had one, put back. */
static void drop(struct nta_ctl *c, int64_t off, const struct nta_meta *m, enum nta_drop_reason why)
{
	release_due(c, m); /* its arrival moves the policy on all the same */
	c->st.drops[why]++;
	c->st.alloc_fails += why == NTA_DROP_NOMEM || why == NTA_DROP_RESERVE_EXHAUSTED;
	if (off > 0 && nta_pool_put(c->pool, (uint64_t)off, NTA_POOL_DIRECT) != 0)
		c->st.put_errors++;
}

static void heap_push(struct nta_ctl *c, struct held h)
{
	size_t i = c->nheap++;
	while (i) {
		size_t parent = (i - 1) / 2;
		if (c->heap[parent].due <= h.due)
			break;
		c->heap[i] = c->heap[parent];
		i = parent;
	}
	c->heap[i] = h;
}

static struct held heap_pop(struct nta_ctl *c)
{
	struct held top = c->heap[0], last = c->heap[--c->nheap];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < c->nheap && c->heap[l].due < last.due)
			m = l;
		if (r < c->nheap && c->heap[r].due < (m == i ? last.due : c->heap[m].due))
			m = r;
		if (m == i)
			break;
		c->heap[i] = c->heap[m];
		i = m;
	}
	if (c->nheap)
		c->heap[i] = last;
	return top;
}

struct nta_ctl *nta_ctl_create(struct nta_pool *pool, struct nta_arena *arena,
				       const struct nta_ctl_config *cfg)
{
	struct nta_ctl *c;

	if (!pool || !arena || !cfg) {
		errno = EINVAL;
		return NULL;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	c->pool = pool;
	c->pc = nta_pool_counters(pool);
	c->arena = arena;
	c->cfg = *cfg;
	c->rng = cfg->seed ? cfg->seed : 0x9e3779b97f4a7c15ull;
	switch (cfg->policy) {
	case NTA_HOLD_IMMEDIATE:
		break;
	case NTA_HOLD_PACKETS:
	case NTA_HOLD_USEC:
		c->cap = cfg->policy == NTA_HOLD_PACKETS ? (size_t)cfg->param + 1 : (size_t)cfg->max_held + 1;
		c->fifo = calloc(c->cap, sizeof(*c->fifo));
		break;
	case NTA_HOLD_FLOW:
		c->flows = calloc((size_t)FLOW_BUCKETS * cfg->param, sizeof(*c->flows));
		c->flow_len = calloc(FLOW_BUCKETS, sizeof(*c->flow_len));
		c->flow_head = calloc(FLOW_BUCKETS, sizeof(*c->flow_head));
		c->flow_seen = calloc(FLOW_BUCKETS, sizeof(*c->flow_seen));
		break;
	case NTA_HOLD_RANDOM:
		c->heap_cap = cfg->max_held ? cfg->max_held : 1u << 20;
		c->heap = calloc(c->heap_cap, sizeof(*c->heap));
		break;
	default:
		free(c);
		errno = EINVAL;
		return NULL;
	}
	if ((cfg->policy == NTA_HOLD_PACKETS || cfg->policy == NTA_HOLD_USEC) && !c->fifo)
		goto nomem;
	if (cfg->policy == NTA_HOLD_FLOW && (!cfg->param || !c->flows || !c->flow_len || !c->flow_head || !c->flow_seen))
		goto nomem;
	if (cfg->policy == NTA_HOLD_RANDOM && !c->heap)
		goto nomem;
	if (cfg->nstuck > NTA_CTL_STUCK_MAX) {
		nta_ctl_destroy(c);
		errno = EINVAL;
		return NULL;
	}
	if ((cfg->flow_limit || cfg->nstuck) && nta_flows_init(&c->ftab, 1024))
		goto nomem;
	for (uint32_t i = 0; i < cfg->nstuck; i++) {
		struct nta_flow *f = nta_flows_get(&c->ftab, cfg->stuck[i]);
		if (!f)
			goto nomem;
		f->stuck = 1;
	}
	return c;
nomem:
	nta_ctl_destroy(c);
	errno = ENOMEM;
	return NULL;
}

/* Let go of the oldest packet in flow bucket b. */
static void flow_release_oldest(struct nta_ctl *c, uint32_t b)
{
	uint32_t k = c->cfg.param;

	release(c, c->flows[(size_t)b * k + c->flow_head[b]]);
	c->flow_head[b] = (c->flow_head[b] + 1) % k;
	c->flow_len[b]--;
}

/* A stuck flow's frame: held until the end, whatever the policy (a reader that stopped). */
static void hold_stuck(struct nta_ctl *c, struct held h)
{
	if (c->nstuck == c->stuck_cap) {
		size_t cap = c->stuck_cap ? 2 * c->stuck_cap : 1024;
		struct held *ns = realloc(c->stuck, cap * sizeof(*ns));
		if (!ns) { /* no room to remember it: let it go now, as read */
			release(c, h);
			return;
		}
		c->stuck = ns;
		c->stuck_cap = cap;
	}
	c->stuck[c->nstuck++] = h;
	c->st.stuck_kept++;
	c->st.stuck_bytes += h.charge;
}

/* A frame arrived (m): let go of what falls due at it, whether or not the frame itself is kept. A reader
 * reads on its own clock: a frame dropped for want of memory still moves the policy on (else, memory out,
 * nothing would ever be let go). packets: what is N packets old; usec: what is T us old; flow: the flow's
 * oldest when its queue is full; random: what its lifetime has run out. */
static void release_due(struct nta_ctl *c, const struct nta_meta *m)
{
	switch (c->cfg.policy) {
	case NTA_HOLD_PACKETS:
		while (c->tail < c->head && c->fifo[c->tail % c->cap].due + c->cfg.param <= c->packets)
			release(c, c->fifo[c->tail++ % c->cap]);
		break;
	case NTA_HOLD_USEC: {
		uint64_t window = (uint64_t)c->cfg.param * 1000;
		while (c->tail < c->head && c->fifo[c->tail % c->cap].due + window <= m->ts_ns)
			release(c, c->fifo[c->tail++ % c->cap]);
		break;
	}
	case NTA_HOLD_FLOW: { /* a flow's frame is read when K more of its flow have arrived */
		uint32_t b = m->flow_hash % FLOW_BUCKETS, k = c->cfg.param;
		uint64_t now = ++c->flow_seen[b];
		while (c->flow_len[b] && c->flows[(size_t)b * k + c->flow_head[b]].due + k <= now)
			flow_release_oldest(c, b);
		break;
	}
	case NTA_HOLD_RANDOM: { /* the frame's own lifetime, drawn now: geometric, mean param packets */
		double u = (double)(next_rand(c) >> 11) / (double)(1ull << 53);
		c->life = c->cfg.param ? (uint64_t)(-(double)c->cfg.param * __builtin_log(1.0 - u)) : 0;
		while (c->nheap && c->heap[0].due <= c->packets)
			release(c, heap_pop(c));
		break;
	}
	}
}

/* Hold h under the policy (what falls due already let go). */
static void hold_policy(struct nta_ctl *c, struct held h, const struct nta_meta *m)
{
	switch (c->cfg.policy) {
	case NTA_HOLD_IMMEDIATE:
		release(c, h);
		break;
	case NTA_HOLD_PACKETS:
		h.due = c->packets;
		c->fifo[c->head++ % c->cap] = h;
		break;
	case NTA_HOLD_USEC:
		if (c->head - c->tail == c->cap - 1) /* full: the oldest goes early */
			release(c, c->fifo[c->tail++ % c->cap]), c->st.early++;
		h.due = m->ts_ns;
		c->fifo[c->head++ % c->cap] = h;
		break;
	case NTA_HOLD_FLOW: {
		uint32_t b = m->flow_hash % FLOW_BUCKETS, k = c->cfg.param;
		struct held *q = c->flows + (size_t)b * k;
		h.due = c->flow_seen[b];
		q[(c->flow_head[b] + c->flow_len[b]) % k] = h;
		c->flow_len[b]++;
		break;
	}
	case NTA_HOLD_RANDOM:
		if (c->nheap == c->heap_cap)
			release(c, heap_pop(c)), c->st.early++;
		h.due = c->packets + c->life;
		heap_push(c, h);
		break;
	}
}

/* Hold h, by its stuck flow or under the policy; then the peaks. */
static void hold(struct nta_ctl *c, struct held h, const struct nta_meta *m, bool stuck)
{
	c->st.held++;
	c->st.bytes_held += h.len;
	if (h.permit) {
		c->st.permitted_kept++;
		c->st.permitted_bytes_held += h.len;
		if (c->st.permitted_bytes_held > c->st.peak_permitted_bytes)
			c->st.peak_permitted_bytes = c->st.permitted_bytes_held;
	}
	release_due(c, m);
	if (stuck)
		hold_stuck(c, h);
	else
		hold_policy(c, h, m);
	/* peaks after the policy let go of what fell due: memory grows only when a frame gets some */
	if (c->st.held > c->st.peak_held)
		c->st.peak_held = c->st.held;
	if (c->st.bytes_held > c->st.peak_bytes_held)
		c->st.peak_bytes_held = c->st.bytes_held;
	if (c->pc->pages.pages_in_use > c->st.peak_pages) {
		c->st.peak_pages = c->pc->pages.pages_in_use;
		c->st.bytes_at_peak_pages = c->st.bytes_held;
		c->st.held_at_peak_pages = c->st.held;
		c->st.posted_at_peak_pages = c->posted ? *c->posted : 0;
	}
}

/* A record or frame came: counted whether or not it is kept. */
struct arrival {
	uint32_t len;          /* its fragment's length (one byte for an empty record) */
	uint8_t permit;        /* NTA_META_PERMIT */
	struct nta_flow *flow; /* with flows kept (a limit, stuck flows), its flow; else NULL */
};

static inline struct arrival arrived(struct nta_ctl *c, const struct nta_meta *m)
{
	struct arrival a = { .len = m->len ? m->len : 1, .permit = m->flags & NTA_META_PERMIT };

	c->packets++;
	c->st.handled++;
	c->st.permitted += a.permit != 0;
	if (unlikely(c->timing)) {
		int b = nta_timing_step(c->timing, m->ts_ns, c->gaps[c->timing->k]);
		if (b >= 0)
			c->timing_hist[b]++;
	}
	if (unlikely(c->ftab.t)) {
		a.flow = nta_flows_get(&c->ftab, m->flow_hash); /* NULL: no memory for the table, no limit */
		c->st.flows = c->ftab.n;
		c->st.stuck_handled += a.flow && a.flow->stuck;
	}
	return a;
}

/* Would charge more bytes put the frame's flow over its limit? */
static inline bool over_limit(const struct nta_ctl *c, const struct arrival *a, uint32_t charge)
{
	return c->cfg.flow_limit && a->flow && a->flow->bytes + charge > c->cfg.flow_limit;
}

/* The frame m, whose fragment of charge bytes is at off, is kept: held under the policy (or by its stuck
 * flow), charged to its flow. */
static inline void take(struct nta_ctl *c, int64_t off, const struct arrival *a, uint32_t charge,
			const struct nta_meta *m)
{
	struct held h = { .off = off, .len = a->len, .charge = charge, .flow = m->flow_hash, .permit = a->permit };
	bool stuck = a->flow && a->flow->stuck;

	if (a->flow)
		a->flow->bytes += charge;
	c->st.kept++;
	c->st.bytes += m->len;
	hold(c, h, m, stuck);
}

long nta_ctl_handle(struct nta_ctl *c, const struct nta_meta *recs, size_t n)
{
	uint8_t *base = nta_arena_base(c->arena);
	long ok = 0;

	for (size_t i = 0; i < n; i++) {
		const struct nta_meta *m = &recs[i];
		const struct arrival a = arrived(c, m);
		const bool may_reserve = a.permit && c->cfg.reserve;
		uint32_t charge = 0;
		if (unlikely(c->cfg.flow_limit)) {
			charge = (uint32_t)nta_pool_frag_size(c->pool, a.len);
			if (over_limit(c, &a, charge)) {
				drop(c, 0, m, NTA_DROP_FLOW_LIMIT);
				continue;
			}
		}
		int64_t off = nta_pool_alloc_frag(c->pool, a.len, may_reserve ? NTA_F_RESERVE : 0);
		if (unlikely(off <= 0)) {
			drop(c, 0, m, may_reserve ? NTA_DROP_RESERVE_EXHAUSTED : NTA_DROP_NOMEM);
			continue;
		}
		if (!charge && c->ftab.t)
			charge = (uint32_t)nta_pool_frag_size(c->pool, a.len);
		/* the record, where a driver would DMA the frame: the memory is really written */
		memcpy(base + off, m, a.len < sizeof(*m) ? a.len : sizeof(*m));
		take(c, off, &a, charge, m);
		ok++;
	}
	return ok;
}

long nta_ctl_hold_frames(struct nta_ctl *c, const int64_t *offs, const struct nta_meta *recs,
			 const uint32_t *charges, size_t n)
{
	long ok = 0;

	for (size_t i = 0; i < n; i++) {
		const struct arrival a = arrived(c, &recs[i]);
		if (c->cfg.reserve && !a.permit && nta_pool_frag_reserve(c->pool, (uint64_t)offs[i]) == 1) {
			drop(c, offs[i], &recs[i], NTA_DROP_NOT_PERMITTED); /* the pfmemalloc rule: back to the reserve */
			continue;
		}
		if (over_limit(c, &a, charges[i])) {
			drop(c, offs[i], &recs[i], NTA_DROP_FLOW_LIMIT);
			continue;
		}
		take(c, offs[i], &a, charges[i], &recs[i]);
		ok++;
	}
	return ok;
}

long nta_ctl_flush(struct nta_ctl *c)
{
	long n = 0;

	while (c->tail < c->head) {
		release(c, c->fifo[c->tail++ % c->cap]);
		n++;
	}
	for (uint32_t b = 0; c->flows && b < FLOW_BUCKETS; b++)
		while (c->flow_len[b]) {
			flow_release_oldest(c, b);
			n++;
		}
	while (c->nheap) {
		release(c, heap_pop(c));
		n++;
	}
	while (c->nstuck) {
		release(c, c->stuck[--c->nstuck]);
		n++;
	}
	return n;
}

long nta_ctl_held(const struct nta_ctl *c, int64_t *offs, uint32_t *lens, size_t max)
{
	size_t n = 0;

#define TAKE(h)                          \
	do {                             \
		if (n == max)            \
			return (long)n;  \
		offs[n] = (h).off;       \
		lens[n++] = (h).len;     \
	} while (0)
	for (size_t i = c->tail; i < c->head; i++)
		TAKE(c->fifo[i % c->cap]);
	for (uint32_t b = 0; c->flows && b < FLOW_BUCKETS; b++)
		for (uint32_t j = 0; j < c->flow_len[b]; j++)
			TAKE(c->flows[(size_t)b * c->cfg.param + (c->flow_head[b] + j) % c->cfg.param]);
	for (size_t i = 0; i < c->nheap; i++)
		TAKE(c->heap[i]);
	for (size_t i = 0; i < c->nstuck; i++)
		TAKE(c->stuck[i]);
#undef TAKE
	return (long)n;
}

void nta_ctl_set_timing(struct nta_ctl *c, struct nta_timing *t, const uint64_t *gaps, uint64_t *hist)
{
	c->timing = t && t->count ? t : NULL;
	c->gaps = gaps;
	c->timing_hist = hist;
}

void nta_ctl_set_posted(struct nta_ctl *c, const uint64_t *posted)
{
	c->posted = posted;
}

void nta_ctl_set_handoff(struct nta_ctl *c, struct nta_handoff *h)
{
	c->handoff = h;
}

int nta_ctl_stats(const struct nta_ctl *c, struct nta_ctl_stats *st)
{
	*st = c->st;
	return 0;
}

void nta_ctl_destroy(struct nta_ctl *c)
{
	if (!c)
		return;
	free(c->fifo);
	free(c->flows);
	free(c->flow_len);
	free(c->flow_head);
	free(c->flow_seen);
	free(c->heap);
	free(c->stuck);
	nta_flows_free(&c->ftab);
	free(c);
}
