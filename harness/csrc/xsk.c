// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xsk.c - real frames into the arena: an AF_XDP socket on one RX queue
 * whose UMEM is the arena's data region, its fill ring fed with buffers of
 * the queue's page pool, each received buffer cut to its frame and held
 * under the controller's policy (see ctl.h). Sockets, UMEM and rings are
 * libxdp's (xsk.h); the buffers are the pool's.
 *
 * The UMEM is registered once over the arena's data pages and the page
 * before them (unaligned chunks: a buffer may start anywhere). The kernel
 * writes a received frame XDP_PACKET_HEADROOM bytes past the address a fill
 * descriptor gives, and in copy mode writes nothing before the frame (no
 * metadata is asked for), so a buffer is posted at its fragment's offset
 * less the headroom: the fragment holds the frame from its first byte, and
 * the headroom it never has is bytes of its neighbours the kernel never
 * touches. A fragment is the largest frame the device takes (its MTU, an
 * Ethernet header and a VLAN tag: veth refuses a longer one), and once the
 * frame's length is known its tail goes back to the pool at once
 * (nta_pool_frag_trim; a pool of another allocator keeps it whole), or a
 * short frame is copied out and its buffer reused whole (copybreak).
 *
 * Zero-copy (XDP_ZEROCOPY) is asked for first unless the config says copy:
 * the driver then DMAs each frame into the arena itself, and the pool's
 * buffers are a driver's page pool made real. A driver without it refuses
 * the bind (veth: EOPNOTSUPP); then the arena is registered afresh and bound
 * in copy mode, and the kernel's errno is kept for the run to report. The
 * layout is the same in both modes: the frame lands XDP_PACKET_HEADROOM past
 * the posted address, the mark (if any) just before it. A zero-copy driver
 * is told its receive buffer is the UMEM chunk less the headroom, which may
 * be longer than the fragment; it writes only the frame, which the device's
 * MTU bounds to the fragment's length.
 *
 * A zero-copy driver may refuse unaligned chunks. Then, unless the config
 * says otherwise, the arena is registered again with aligned chunks of a
 * page (the most the kernel takes), and bound in zero-copy mode once more;
 * copy mode comes only if that is refused too. A buffer is then a whole
 * page of the pool, which the kernel fills XDP_PACKET_HEADROOM past its
 * start: before it is posted, the NTA cuts the headroom off it
 * (nta_pool_frag_cut), so the block starts where the frame (or its mark)
 * will, as with unaligned chunks, and the bytes cut off serve other blocks.
 * Everything after the post is the same in both layouts: the address
 * posted is the block's start less the headroom, the frame is at the
 * block's start, and its tail is trimmed once its length is known. The
 * cost: only whole free pages can be posted, as in a driver's page pool.
 *
 * Which buffers are posted is a bitmap over the arena's chunks: a receive
 * descriptor naming anything else is counted and ignored, and at the end
 * what is still posted is put back.
 *
 * At the limit: a pool at its budget refuses buffers, and the fill ring
 * runs short; the kernel's drops for want of a fill buffer while that lasts
 * (from a refused buffer until the ring is full again) are counted as the
 * budget's. With a --permit filter (meta_room: a chunk in front of each
 * frame for the program's mark, cleared before the buffer is posted) and a
 * reserve, buffers come from the reserve once ordinary memory is out, as a
 * driver's do when memalloc sockets exist: a frame that lands in one
 * without permission is dropped by the controller (the pfmemalloc rule).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <linux/if_ether.h>
#include <linux/if_xdp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "ctl.h"

_Static_assert(NTA_XSK_HEADROOM == XDP_PACKET_HEADROOM, "ctl.h tells Python the kernel's headroom");

#define RX_BATCH 64
#define UMEM_MIN_CHUNK 2048 /* the kernel's XDP_UMEM_MIN_CHUNK_SIZE: the least chunk a UMEM takes */

struct nta_xsk {
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp, rx;
	struct nta_ctl *ctl;
	struct nta_pool *pool;
	uint8_t *base;          /* the arena's mapping */
	uint64_t umem_off;      /* the arena offset of UMEM address 0 */
	uint64_t umem_len;
	uint32_t chunk_shift, chunk_size, buf_size, umem_chunk;
	uint32_t page_size;     /* the arena's */
	uint32_t alloc_size;    /* a buffer as taken from the pool: buf_size + meta_room, or a page when aligned */
	bool aligned;           /* the UMEM's chunks are aligned pages: a buffer's headroom is cut off it */
	uint32_t fill_max, copybreak;
	uint32_t meta_room;     /* bytes in front of a frame: its mark ends there (0: no --permit) */
	unsigned alloc_flags;   /* NTA_F_RESERVE: buffers may come from the reserve */
	bool starved;           /* the pool refused a buffer since the ring was last full */
	uint64_t starved_since; /* the kernel's rx_dropped then */
	uint64_t *posted_map;   /* a bit per arena chunk: a buffer starting there is on the fill ring */
	uint64_t map_bits;
	int64_t *aside;         /* buffers the UMEM cannot take (too near its end): put back at the end */
	uint32_t naside, aside_cap;
	struct nta_xsk_stats st;
};

static int silent(enum libxdp_print_level level, const char *fmt, va_list args)
{
	(void)level, (void)fmt, (void)args;
	return 0;
}

static inline uint64_t chunk_of(const struct nta_xsk *x, uint64_t off)
{
	return off >> x->chunk_shift;
}

/* Keep a buffer the UMEM cannot take until the end (so that the pool does not hand it out again). */
static bool set_aside(struct nta_xsk *x, int64_t off)
{
	if (x->naside == x->aside_cap) {
		uint32_t cap = x->aside_cap ? 2 * x->aside_cap : 16;
		int64_t *na = realloc(x->aside, cap * sizeof(*na));
		if (!na)
			return false;
		x->aside = na, x->aside_cap = cap;
	}
	x->aside[x->naside++] = off;
	x->st.aside++;
	return true;
}

/* The kernel's rx_dropped now (frames that found no fill buffer); 0 when it cannot be read. */
static uint64_t kernel_rx_dropped(const struct nta_xsk *x)
{
	struct xdp_statistics ks;
	socklen_t len = sizeof(ks);

	return getsockopt(xsk_socket__fd(x->xsk), SOL_XDP, XDP_STATISTICS, &ks, &len) ? 0 : ks.rx_dropped;
}

/* The pool refused a buffer: a starved stretch begins (its drops are the budget's), unless one runs. */
static void starve(struct nta_xsk *x)
{
	x->st.post_fails++;
	if (x->starved)
		return;
	x->starved = true;
	x->st.starved++;
	x->starved_since = kernel_rx_dropped(x);
}

/* The ring is full again: what the kernel dropped meanwhile was for want of the buffers refused. */
static void fed(struct nta_xsk *x)
{
	if (!x->starved)
		return;
	x->starved = false;
	x->st.rx_dropped_starved += kernel_rx_dropped(x) - x->starved_since;
}

/* An aligned chunk's buffer (a page at off) with its headroom cut off: the block now starts where the mark or
 * the frame will land. A buffer that cannot be cut (a reader pins it) goes back, and refill stops. */
static int64_t cut_headroom(struct nta_xsk *x, int64_t off)
{
	const uint32_t skip = XDP_PACKET_HEADROOM - x->meta_room;
	int64_t to = nta_pool_frag_cut(x->pool, (uint64_t)off, skip, x->st.buffer_bytes);

	if (to < 0) {
		nta_pool_put(x->pool, (uint64_t)off, NTA_POOL_DIRECT);
		x->st.post_fails++;
		return 0;
	}
	x->st.heads_cut++;
	return to;
}

/* Keep the fill ring holding fill_max buffers of the pool: a batch of them taken, then posted at once.
 * The ring has room for them all: it holds fill_max, and what is posted and not received is at most
 * what the kernel has not taken yet. */
static void refill(struct nta_xsk *x)
{
	int64_t offs[RX_BATCH];
	uint32_t idx, n = 0;

	while (x->st.in_fill + n < x->fill_max && n < RX_BATCH) {
		int64_t off = nta_pool_alloc_frag(x->pool, x->alloc_size, x->alloc_flags);
		if (off <= 0) {
			starve(x);
			break;
		}
		if (x->aligned && (off = cut_headroom(x, off)) <= 0)
			break;
		const uint64_t at = (uint64_t)off + x->meta_room - x->umem_off - XDP_PACKET_HEADROOM;
		if (at + x->umem_chunk > x->umem_len || (x->aligned && at % x->umem_chunk)) {
			if (set_aside(x, off)) /* the kernel takes no buffer ending past the UMEM, or misaligned */
				continue;
			nta_pool_put(x->pool, (uint64_t)off, NTA_POOL_DIRECT);
			break;
		}
		offs[n++] = off;
	}
	if (!n)
		return;
	if (xsk_ring_prod__reserve(&x->fill, n, &idx) != n) { /* cannot happen (see above): give them back */
		for (uint32_t i = 0; i < n; i++)
			nta_pool_put(x->pool, (uint64_t)offs[i], NTA_POOL_DIRECT);
		x->st.post_fails += n;
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint64_t c = chunk_of(x, (uint64_t)offs[i]);
		x->posted_map[c >> 6] |= 1ull << (c & 63);
		if (x->meta_room) { /* no mark but the program's: what a buffer held before is cleared */
			memset(x->base + offs[i] + x->meta_room - sizeof(uint32_t), 0, sizeof(uint32_t));
			x->st.posted_reserve += nta_pool_frag_reserve(x->pool, (uint64_t)offs[i]) == 1;
		}
		*xsk_ring_prod__fill_addr(&x->fill, idx + i) =
			(uint64_t)offs[i] + x->meta_room - x->umem_off - XDP_PACKET_HEADROOM;
	}
	xsk_ring_prod__submit(&x->fill, n);
	x->st.posted += n;
	x->st.in_fill += n;
	if (x->st.in_fill == x->fill_max)
		fed(x);
	if (xsk_ring_prod__needs_wakeup(&x->fill)) {
		x->st.wakeups++;
		recvfrom(xsk_socket__fd(x->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
	}
	if (n == RX_BATCH)
		refill(x);
}

/* Where a received frame stays (its block at off, the frame meta_room into it), and the bytes the block
 * takes now, in *charge: a short one (copybreak) is copied into a block of its own size and its buffer goes
 * back whole, to be posted again, as drivers' rx_copybreak does; a longer one keeps its buffer, cut to the
 * frame (a pool of another allocator keeps it whole). */
static uint64_t settle(struct nta_xsk *x, uint64_t off, uint32_t len, uint32_t *charge)
{
	const uint32_t room = x->meta_room, keep = room + (len ? len : 1);

	if (len && len <= x->copybreak) {
		int64_t to = nta_pool_alloc_frag(x->pool, keep, 0);
		if (to > 0) {
			memcpy(x->base + to, x->base + off, keep);
			nta_pool_put(x->pool, off, NTA_POOL_DIRECT);
			x->st.copied++;
			*charge = (uint32_t)nta_pool_frag_size(x->pool, keep);
			return (uint64_t)to;
		}
	}
	long now = nta_pool_frag_trim(x->pool, off, keep);
	if (now < 0) {
		x->st.untrimmed++;
		now = (long)nta_pool_frag_size(x->pool, x->alloc_size);
	}
	*charge = (uint32_t)now;
	return off;
}

long nta_xsk_receive(struct nta_xsk *x, struct nta_meta *recs, int64_t *offs, size_t max)
{
	uint32_t idx, charges[RX_BATCH];
	size_t total = 0;

	refill(x);
	while (total < max) {
		uint32_t want = (uint32_t)(max - total < RX_BATCH ? max - total : RX_BATCH);
		uint32_t n = xsk_ring_cons__peek(&x->rx, want, &idx), k = 0;
		if (!n)
			break;
		uint64_t now = nta_ctl_now_ns();
		for (uint32_t i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
			uint64_t off = x->umem_off + xsk_umem__add_offset_to_addr(d->addr) - x->meta_room;
			uint64_t c = chunk_of(x, off);
			if (off & (x->chunk_size - 1) || c >= x->map_bits ||
			    !(x->posted_map[c >> 6] & (1ull << (c & 63)))) {
				x->st.bad_descs++; /* names no buffer we posted (or the frame not where we put it) */
				continue;
			}
			x->posted_map[c >> 6] &= ~(1ull << (c & 63));
			x->st.in_fill--;
			x->st.received++;
			x->st.bytes += d->len;
			struct nta_meta *m = &recs[total + k];
			memset(m, 0, sizeof(*m));
			if (x->meta_room) { /* the program's mark, in front of the frame */
				uint32_t mark;
				memcpy(&mark, x->base + off + x->meta_room - sizeof(mark), sizeof(mark));
				if ((mark & ~0xffu) == NTA_XSK_MARK)
					m->flags = (uint8_t)(mark & NTA_META_PERMIT);
				else
					x->st.unmarked++;
			}
			off = settle(x, off, d->len, &charges[k]);
			m->ts_ns = now;
			m->len = d->len;
			m->flow_hash = nta_flow_hash(x->base + off + x->meta_room, d->len);
			offs[total + k++] = (int64_t)off;
		}
		xsk_ring_cons__release(&x->rx, n);
		nta_ctl_hold_frames(x->ctl, offs + total, recs + total, charges, k);
		total += k;
		refill(x);
	}
	return (long)total;
}

int nta_xsk_stats(const struct nta_xsk *x, struct nta_xsk_stats *st)
{
	struct xdp_statistics ks;
	socklen_t len = sizeof(ks);

	*st = x->st;
	if (getsockopt(xsk_socket__fd(x->xsk), SOL_XDP, XDP_STATISTICS, &ks, &len))
		return -errno;
	if (x->starved) /* a starved stretch that has not ended: its drops so far */
		st->rx_dropped_starved += ks.rx_dropped - x->starved_since;
	st->rx_dropped = ks.rx_dropped;
	st->rx_invalid_descs = ks.rx_invalid_descs;
	st->rx_ring_full = ks.rx_ring_full;
	st->rx_fill_ring_empty_descs = ks.rx_fill_ring_empty_descs;
	return 0;
}

int nta_xsk_fd(const struct nta_xsk *x)
{
	return xsk_socket__fd(x->xsk);
}

/* The UMEM's chunks: aligned pages, each buffer a page whose headroom is cut off before it is posted; or
 * unaligned, each buffer the largest frame (and the mark's room), in a chunk of at least the kernel's least. */
static void use_chunks(struct nta_xsk *x, const struct nta_xsk_config *cfg, bool aligned)
{
	const uint32_t frame = XDP_PACKET_HEADROOM + cfg->buf_size;

	x->aligned = aligned;
	x->umem_chunk = aligned ? x->page_size : frame < UMEM_MIN_CHUNK ? UMEM_MIN_CHUNK : frame;
	x->alloc_size = aligned ? x->page_size : cfg->buf_size + cfg->meta_room;
	x->st.buffer_bytes = aligned ? x->page_size - (XDP_PACKET_HEADROOM - cfg->meta_room) : x->alloc_size;
}

/* The arena registered as UMEM and a socket bound to the queue with bind_flags (XDP_ZEROCOPY or
 * XDP_COPY). On failure neither is left: a socket whose bind failed keeps its rings, and libxdp would
 * give the next one the same descriptor, so a retry starts from a fresh UMEM. */
static int open_socket(struct nta_xsk *x, const struct nta_xsk_config *cfg, uint16_t bind_flags, char *why,
		       size_t whylen)
{
	struct xsk_umem_config uc = { .fill_size = cfg->ring_size, .comp_size = cfg->ring_size,
				      .frame_size = x->umem_chunk, .frame_headroom = 0,
				      .flags = x->aligned ? 0 : XDP_UMEM_UNALIGNED_CHUNK_FLAG };
	int err = xsk_umem__create(&x->umem, x->base + x->umem_off, x->umem_len, &x->fill, &x->comp, &uc);

	if (err) {
		x->umem = NULL;
		snprintf(why, whylen, "registering the arena as UMEM (%llu bytes): %s", (unsigned long long)x->umem_len,
			 strerror(-err));
		return err;
	}
	struct xsk_socket_config sc = { .rx_size = cfg->ring_size, .tx_size = 0,
					.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
					.bind_flags = bind_flags | XDP_USE_NEED_WAKEUP };
	err = xsk_socket__create(&x->xsk, cfg->ifname, cfg->queue, x->umem, &x->rx, NULL, &sc);
	if (err) {
		x->xsk = NULL;
		xsk_umem__delete(x->umem);
		x->umem = NULL;
		snprintf(why, whylen, "an AF_XDP socket on %s queue %u%s%s: %s", cfg->ifname, cfg->queue,
			 bind_flags & XDP_ZEROCOPY ? " in zero-copy mode" : "", x->aligned ? " with aligned chunks" : "",
			 strerror(-err));
	}
	return err;
}

struct nta_xsk *nta_xsk_create(struct nta_ctl *c, struct nta_pool *pool, struct nta_arena *a,
			       const struct nta_xsk_config *cfg, char *why, size_t whylen)
{
	struct nta_config ac;
	struct nta_stats as;
	struct nta_xsk *x;
	int err;

	if (!c || !pool || !a || !cfg || !cfg->ifname || !cfg->ring_size || (cfg->ring_size & (cfg->ring_size - 1)) ||
	    cfg->fill_max > cfg->ring_size || !cfg->buf_size) {
		snprintf(why, whylen, "bad configuration");
		errno = EINVAL;
		return NULL;
	}
	nta_arena_config(a, &ac);
	nta_stats(a, &as);
	if ((cfg->meta_room && cfg->meta_room != NTA_XSK_META_ROOM) || (cfg->reserve && !cfg->meta_room)) {
		snprintf(why, whylen, "the mark's room is %u bytes or none; reserve buffers need it", NTA_XSK_META_ROOM);
		errno = EINVAL;
		return NULL;
	}
	if (cfg->buf_size + cfg->meta_room + XDP_PACKET_HEADROOM > ac.page_size) {
		snprintf(why, whylen, "a buffer of %u bytes, %u for the mark and the %u of headroom exceed a page",
			 cfg->buf_size, cfg->meta_room, XDP_PACKET_HEADROOM);
		errno = EMSGSIZE;
		return NULL;
	}
	if (!(x = calloc(1, sizeof(*x))))
		return NULL;
	libxdp_set_print(silent);
	x->ctl = c, x->pool = pool, x->base = nta_arena_base(a);
	x->chunk_size = ac.chunk_size;
	x->chunk_shift = (uint32_t)__builtin_ctz(ac.chunk_size);
	x->buf_size = cfg->buf_size;
	x->page_size = ac.page_size;
	x->fill_max = cfg->fill_max ? cfg->fill_max : cfg->ring_size;
	x->copybreak = cfg->copybreak;
	x->meta_room = cfg->meta_room;
	x->alloc_flags = cfg->reserve ? NTA_F_RESERVE : 0;
	x->umem_off = as.data_off - ac.page_size;
	x->umem_len = (uint64_t)(ac.max_pages + 1) * ac.page_size;
	x->map_bits = (as.data_off + (uint64_t)ac.max_pages * ac.page_size) >> x->chunk_shift;
	x->posted_map = calloc((x->map_bits + 63) / 64, sizeof(uint64_t));
	if (!x->posted_map) {
		free(x);
		return NULL;
	}
	const bool can_align = ac.page_size == (uint32_t)getpagesize() && cfg->chunks != NTA_XSK_CHUNKS_UNALIGNED;
	if (cfg->chunks == NTA_XSK_CHUNKS_ALIGNED && !can_align) {
		snprintf(why, whylen, "aligned chunks are pages of the system's size (%d bytes), and the arena's are %u",
			 getpagesize(), ac.page_size);
		err = -EINVAL;
		goto fail;
	}
	if (cfg->xdp_mode != NTA_XSK_COPY) {
		use_chunks(x, cfg, cfg->chunks == NTA_XSK_CHUNKS_ALIGNED);
		err = open_socket(x, cfg, XDP_ZEROCOPY, why, whylen);
		if (err && can_align && !x->aligned) { /* perhaps the driver takes aligned chunks only */
			char first[256];
			snprintf(first, sizeof(first), "%s", why);
			use_chunks(x, cfg, true);
			if (!open_socket(x, cfg, XDP_ZEROCOPY, why, whylen)) {
				x->st.unaligned_errno = (uint64_t)-err;
				err = 0;
			} else {
				snprintf(why, whylen, "%s", first); /* the first refusal says it */
			}
		}
		if (!err) {
			x->st.zerocopy = 1;
		} else if (cfg->xdp_mode == NTA_XSK_ZEROCOPY) {
			goto fail;
		} else {
			x->st.zc_errno = (uint64_t)-err; /* the kernel's reason for refusing it */
		}
	}
	if (!x->st.zerocopy) {
		use_chunks(x, cfg, cfg->chunks == NTA_XSK_CHUNKS_ALIGNED);
		err = open_socket(x, cfg, XDP_COPY, why, whylen);
		if (err)
			goto fail;
	}
	x->st.aligned = x->aligned;
	err = xsk_socket__update_xskmap(x->xsk, cfg->xskmap_fd);
	if (err) {
		snprintf(why, whylen, "the socket into the XDP program's map: %s", strerror(-err));
		goto fail;
	}
	nta_ctl_set_posted(c, &x->st.in_fill);
	refill(x);
	return x;
fail:
	nta_xsk_destroy(x);
	errno = -err;
	return NULL;
}

void nta_xsk_destroy(struct nta_xsk *x)
{
	if (!x)
		return;
	nta_ctl_set_posted(x->ctl, NULL);
	if (x->xsk)
		xsk_socket__delete(x->xsk);
	if (x->umem)
		xsk_umem__delete(x->umem);
	/* the kernel holds nothing now: what is still posted, and what was set aside, goes back */
	for (uint64_t w = 0; x->posted_map && w < (x->map_bits + 63) / 64; w++)
		for (uint64_t bits = x->posted_map[w]; bits; bits &= bits - 1) {
			uint64_t c = w * 64 + (uint64_t)__builtin_ctzll(bits);
			nta_pool_put(x->pool, c << x->chunk_shift, NTA_POOL_DIRECT);
		}
	for (uint32_t i = 0; i < x->naside; i++)
		nta_pool_put(x->pool, (uint64_t)x->aside[i], NTA_POOL_DIRECT);
	free(x->aside);
	free(x->posted_map);
	free(x);
}
