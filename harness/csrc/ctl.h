/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ctl.h - the controller's C: drain the XDP program's metadata ring and do
 * the per-packet work against a page pool of the allocator (allocator/nta.h).
 * Built into harness._ctl_c, which links libnta.so; harness/controller.py is
 * its Python side.
 *
 * Error rule (the allocator's): int and long functions return >= 0 or a
 * negative errno; pointer functions return NULL and set errno.
 */
#ifndef NTA_CTL_H
#define NTA_CTL_H

#ifndef NTA_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

#ifndef NTA_CDEF /* the binding takes these from harness._nta_c and harness._traffic_c */
#include <time.h>

#include "nta.h"
#include "nta_shared.h"

/* CLOCK_MONOTONIC in ns (bpf_ktime_get_ns()'s clock), for the loops here. */
static inline uint64_t nta_ctl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A loop's wait with nothing to do: sleep *nap, or with none, a pause. */
static inline void nta_ctl_idle(const struct timespec *nap)
{
	if (nap->tv_nsec)
		nanosleep(nap, NULL);
	else
		__builtin_ia32_pause();
}
#endif

/*
 * Draining a BPF ring buffer (BPF_MAP_TYPE_RINGBUF: the XDP program's
 * metadata ring) in C. Its size is read from the map itself.
 */
struct nta_ringbuf;
struct nta_ringbuf *nta_ringbuf_open(int map_fd); /* errno EINVAL: not a ring buffer map */
void nta_ringbuf_close(struct nta_ringbuf *rb);
/* The ring's size in bytes (the map's max_entries). */
size_t nta_ringbuf_size(const struct nta_ringbuf *rb);
/* Copy up to max records of exactly rec_size bytes into out (consecutive);
 * records of another size are skipped and counted in *odd. Returns how many. */
long nta_ringbuf_drain(struct nta_ringbuf *rb, void *out, size_t rec_size, size_t max, uint64_t *odd);
long nta_ringbuf_avail(const struct nta_ringbuf *rb);

/*
 * The controller's per-packet work, one call per batch (ctl.c): each
 * metadata record (struct nta_meta, bpf/nta_shared.h) gets a fragment of
 * its frame's length from the pool, held under a lifetime policy.
 */
struct nta_ctl;
enum nta_hold {
	NTA_HOLD_IMMEDIATE = 0,
	NTA_HOLD_PACKETS = 1, /* param: N packets */
	NTA_HOLD_USEC = 2,    /* param: T microseconds (the records' clock); max_held bounds it */
	NTA_HOLD_FLOW = 3,    /* param: K per flow */
	NTA_HOLD_RANDOM = 4,  /* param: mean lifetime in packets; max_held bounds it */
};
#define NTA_CTL_STUCK_MAX 64
struct nta_ctl_config {
	uint32_t policy, param, max_held, pad;
	uint64_t seed;
	/* memory at the limit */
	uint32_t flow_limit;  /* bytes a flow may hold, charged as the pool hands them out (a socket's receive
	                       * buffer, charged by truesize); a frame over it is dropped; 0: no limit */
	uint32_t reserve;     /* permitted frames (NTA_META_PERMIT) may take the pool's reserve when ordinary
	                       * memory is out; a frame in reserve memory that is not permitted is dropped */
	uint32_t nstuck;      /* flows never read until the run ends (a reader that stopped), by flow hash */
	uint32_t pad2;
	uint32_t stuck[NTA_CTL_STUCK_MAX];
};
struct nta_ctl_stats {
	uint64_t handled;     /* records processed: kept + the drops, by reason */
	uint64_t kept;        /* frames that got memory, held by the policy or by a stuck flow */
	uint64_t drops[NTA_DROP_REASONS]; /* frames dropped, by reason (enum nta_drop_reason) */
	uint64_t alloc_fails; /* of the drops, frames that got no memory (no memory, the reserve exhausted) */
	uint64_t frees, put_errors;
	uint64_t held, peak_held;
	uint64_t early;       /* let go before due: the hold structure was full */
	uint64_t bytes;       /* bytes allocated */
	uint64_t bytes_held;  /* bytes the frames held now asked for */
	uint64_t peak_bytes_held;
	uint64_t peak_pages;          /* the most pages the pool had in use (holding fragments) */
	uint64_t bytes_at_peak_pages; /* bytes the frames held asked for when pages first reached it */
	uint64_t held_at_peak_pages;  /* fragments held when pages first reached their peak */
	uint64_t posted_at_peak_pages; /* and buffers handed out holding no frame yet (nta_ctl_set_posted) */
	uint64_t handed_off;          /* of frees, fragments handed to a reader (nta_ctl_set_handoff) */
	uint64_t handoff_full;        /* of frees, put here because the handoff was full */
	uint64_t permitted, permitted_kept; /* frames marked permitted the reserve, and of those the kept ones */
	uint64_t permitted_bytes_held, peak_permitted_bytes; /* what the permitted frames held asked for, at most */
	uint64_t stuck_handled, stuck_kept, stuck_bytes; /* frames of the stuck flows; kept; bytes charged now */
	uint64_t flows;               /* flows the flow table knows (with a flow limit or stuck flows) */
};
struct nta_ctl *nta_ctl_create(struct nta_pool *pool, struct nta_arena *arena, const struct nta_ctl_config *cfg);
long nta_ctl_handle(struct nta_ctl *c, const struct nta_meta *recs, size_t n);
/* Put back everything held; returns how many. */
long nta_ctl_flush(struct nta_ctl *c);
/* What it holds now: up to max fragments' offsets and the bytes their frames asked for. Returns how
 * many it wrote. */
long nta_ctl_held(const struct nta_ctl *c, int64_t *offs, uint32_t *lens, size_t max);
int nta_ctl_stats(const struct nta_ctl *c, struct nta_ctl_stats *st);
void nta_ctl_destroy(struct nta_ctl *c);

/*
 * Frees on another CPU (handoff.c): with a handoff set, what the policy lets
 * go is handed to a reader (a thread on another CPU, as a socket's reader),
 * which reads each fragment and frees it, posting the frees in batches to
 * the pool's remote queue (nta_pool_put_remote_bulk). The handoff is a
 * bounded single-producer (the controller), single-consumer (the reader)
 * ring of offsets; when it is full the controller puts the fragment itself
 * (counted: handoff_full).
 */
struct nta_handoff;
struct nta_handoff *nta_handoff_create(uint32_t size); /* size: a power of two >= 2 */
void nta_handoff_destroy(struct nta_handoff *h);
int nta_handoff_push(struct nta_handoff *h, int64_t off);               /* 0, or -EAGAIN (full) */
long nta_handoff_take(struct nta_handoff *h, int64_t *offs, size_t max); /* how many taken */
uint64_t nta_handoff_queued(const struct nta_handoff *h);
/* n received frames, each already in a fragment of the controller's pool (offs[i], which the fragment's
 * charge, charges[i] bytes, the flow limit counts), recs[i] its record (len, ts_ns, flow_hash, flags):
 * held under the policy, or dropped as a ring's record would be (over its flow's limit; in reserve memory
 * and not permitted), its fragment put back. Returns how many were kept. */
long nta_ctl_hold_frames(struct nta_ctl *c, const int64_t *offs, const struct nta_meta *recs,
			 const uint32_t *charges, size_t n);
/* The flow a frame belongs to: its addresses and ports after up to two VLAN tags, hashed as the metadata
 * program hashes a record's (a frame that is not IP: its protocol 0) (ctl_flows.c). */
uint32_t nta_flow_hash(const uint8_t *frame, uint32_t len);
/* Time the records' arrival at XDP (their ts_ns) against their sender's schedule: t the state (its
 * count the gaps'), gaps as nta_replay_gaps gives them, each gap error counted in hist (NTA_TIMING_BUCKETS
 * of them). NULL t: not timed. (AF_XDP frames are timed by the XDP program: their records hold no XDP
 * time.) */
void nta_ctl_set_timing(struct nta_ctl *c, struct nta_timing *t, const uint64_t *gaps, uint64_t *hist);
/* The pool's fragments handed out and holding no frame yet (an AF_XDP fill ring's buffers) are *posted:
 * counted at the pool's peak (posted_at_peak_pages). */
void nta_ctl_set_posted(struct nta_ctl *c, const uint64_t *posted);
/* Hand what the policy lets go to h from now on (NULL: put it here again). */
void nta_ctl_set_handoff(struct nta_ctl *c, struct nta_handoff *h);

#define NTA_FREE_READER_BATCH 64
struct nta_free_reader {
	/* in */
	struct nta_handoff *from;
	struct nta_pool *pool;  /* the fragments' pool: another thread owns it */
	const struct nta_arena *arena; /* the pool's, mapped in this process */
	uint64_t idle_ns;       /* slept on an empty handoff (0: spin); < 1 s */
	uint32_t batch;         /* frees posted at once, <= NTA_FREE_READER_BATCH; 0 means the max */
	int32_t stop;
	/* out, cumulative */
	uint64_t taken, batches; /* fragments freed (posted), and the batches posted */
	uint64_t full_waits;     /* posts refused (the remote queue was full) and tried again */
	uint64_t empty;          /* passes that found the handoff empty */
	uint64_t sum;            /* of the first 8 bytes of every fragment read */
};
/* Read and free what comes through r->from until stopped (nta_free_reader_stop(), any thread) and the
 * handoff is empty. Returns 0, -EINVAL, or a post's error. */
long nta_free_reader_run(struct nta_free_reader *r);
void nta_free_reader_stop(struct nta_free_reader *r);

/*
 * Real frames into the arena (xsk.c): an AF_XDP socket on one RX queue, the
 * arena's data region its UMEM, the fill ring fed with the pool's buffers of
 * buf_size bytes (at most fill_max posted), each received buffer cut to its
 * frame (nta_pool_frag_trim) and held by the controller. Create it in the
 * device's network namespace (ifname is looked up there). The counters:
 * frames received and their bytes, buffers posted (posted - received: on the
 * fill ring now), refused by the pool, kicks of need_wakeup, descriptors that
 * named no posted buffer, buffers the pool could not trim (another
 * allocator), and the kernel's XDP_STATISTICS.
 */
struct nta_xsk;
/* An AF_XDP socket's buffers and rings, for C and Python alike. */
#define NTA_XSK_HEADROOM 256 /* the kernel's XDP_PACKET_HEADROOM: a frame lands this far into a fill buffer */
#define NTA_XSK_RING 2048    /* fill and RX ring entries */
#define NTA_XSK_META_ROOM 32 /* with --permit, a chunk in front of each frame: the program's mark ends there */

struct nta_xsk_config {
	const char *ifname;
	uint32_t queue;
	uint32_t ring_size;  /* fill and RX ring entries, a power of two */
	uint32_t fill_max;   /* buffers posted at most, <= ring_size; 0: ring_size */
	uint32_t buf_size;   /* a buffer: the largest frame the device takes */
	int32_t xskmap_fd;   /* the XDP program's XSKMAP: the socket goes in at queue */
	uint32_t copybreak;  /* a frame of at most this many bytes is copied out, its buffer reused whole */
	uint32_t meta_room;  /* 0, or NTA_XSK_META_ROOM with --permit: each block holds the mark, then the frame */
	uint32_t reserve;    /* buffers may come from the reserve once ordinary memory is out (needs meta_room) */
	uint32_t xdp_mode;   /* NTA_XSK_AUTO: zero-copy, else copy; NTA_XSK_COPY; NTA_XSK_ZEROCOPY: or fail */
	uint32_t chunks;     /* the UMEM's chunks: NTA_XSK_CHUNKS_* */
};
#define NTA_XSK_AUTO 0
#define NTA_XSK_COPY 1
#define NTA_XSK_ZEROCOPY 2
/* Unaligned chunks: a buffer starts anywhere. Aligned: each buffer a page of the arena, its headroom cut off
 * before it is posted (nta_pool_frag_cut: an NTA pool only). AUTO: unaligned, and aligned in zero-copy mode
 * when the driver refuses unaligned chunks; UNALIGNED (a pool that cannot cut): never aligned. */
#define NTA_XSK_CHUNKS_AUTO 0
#define NTA_XSK_CHUNKS_UNALIGNED 1
#define NTA_XSK_CHUNKS_ALIGNED 2
struct nta_xsk_stats {
	uint64_t received, bytes;
	uint64_t posted, in_fill, post_fails, wakeups;
	uint64_t bad_descs, untrimmed, copied;
	uint64_t posted_reserve;     /* of posted, buffers in reserve memory */
	uint64_t unmarked;           /* with meta_room: frames without the program's mark (taken as not permitted) */
	uint64_t starved;            /* stretches the pool refused buffers (its budget: no memory) until the ring was full */
	uint64_t rx_dropped_starved; /* of rx_dropped, the kernel's drops during those stretches */
	uint64_t rx_dropped, rx_invalid_descs, rx_ring_full, rx_fill_ring_empty_descs; /* XDP_STATISTICS */
	uint64_t zerocopy;           /* 1: bound in zero-copy mode (the driver DMAs into the arena); 0: copy */
	uint64_t zc_errno;           /* in copy mode after zero-copy was asked for: the kernel's errno refusing it */
	uint64_t aligned;            /* 1: the UMEM's chunks are aligned pages (see NTA_XSK_CHUNKS_ALIGNED) */
	uint64_t unaligned_errno;    /* aligned after zero-copy with unaligned chunks was refused: the kernel's errno */
	uint64_t aside;              /* buffers the UMEM cannot take (past its end; not a page's start when aligned) */
	uint64_t heads_cut;          /* aligned: pages whose headroom the pool cut off before they were posted */
	uint64_t buffer_bytes;       /* a buffer as posted: the frame's room and the mark's, or an aligned page
	                                less the headroom cut off */
};
/* NULL with errno and a line in why on failure. */
struct nta_xsk *nta_xsk_create(struct nta_ctl *c, struct nta_pool *pool, struct nta_arena *a,
			       const struct nta_xsk_config *cfg, char *why, size_t whylen);
/* Post buffers, then take up to max received frames: trimmed, held (their records in recs, offsets in offs).
 * Returns how many. */
long nta_xsk_receive(struct nta_xsk *x, struct nta_meta *recs, int64_t *offs, size_t max);
int nta_xsk_stats(const struct nta_xsk *x, struct nta_xsk_stats *st);
int nta_xsk_fd(const struct nta_xsk *x);
/* The socket and UMEM gone; what was still posted back to the pool. */
void nta_xsk_destroy(struct nta_xsk *x);

/*
 * The controller's loop (ctlpoll.c): drain rb into buf, max records at a time, and handle them, until
 * the ring is empty at or after until_ns (CLOCK_MONOTONIC; 0: until it is first empty), or until stop
 * is set (nta_ctl_poll_stop(), from another thread: a thread that runs the loop with until_ns
 * UINT64_MAX drains as records come and never returns to its caller before). With nothing in the ring
 * it spins (idle_ns 0) or sleeps idle_ns. Each record's wait, from XDP's timestamp to its drain, is
 * counted in lat_hist by microseconds (the last bucket counts all longer ones; NULL: not kept).
 *
 * Every sample_ns (0: never) it samples the pool: utilisation (bytes the held frames asked for over
 * the bytes of the pool's pages in use) summed into util_sum, and the counters published for other
 * threads (nta_ctl_poll_snapshot). Given map (map_cells bytes), the pool's page map at the sample
 * with the most pages in use is kept there, over the arena's pages used so far (map_pages of them),
 * with what the controller held then in held_offs/held_lens (held_max of them; held_n written).
 * The out counts add up over calls. Returns 0 or -EINVAL.
 */
struct nta_ctl_snapshot {
	uint64_t seq; /* odd while being written */
	uint64_t drained;
	struct nta_ctl_stats ctl;
	struct nta_pool_stats pool;
};
struct nta_ctl_poll {
	/* in */
	uint64_t until_ns;
	uint64_t idle_ns;       /* < 1 s */
	struct nta_meta *buf;
	uint64_t max;
	uint64_t *lat_hist;
	uint64_t lat_buckets;
	uint64_t sample_ns;
	struct nta_pool *pool;  /* the controller's pool, sampled */
	struct nta_arena *arena;
	uint64_t page_size, chunk_size; /* the arena's */
	uint8_t *map;
	uint64_t map_cells;
	int64_t *held_offs;
	uint32_t *held_lens;
	uint64_t held_max;
	struct nta_xsk *xsk;    /* set: frames come from this socket (offs: max of them), not from rb */
	int64_t *offs;
	int32_t stop;
	int32_t pad;
	/* out, cumulative */
	uint64_t drained;       /* records handled */
	uint64_t odd;           /* records of another size than struct nta_meta, skipped */
	uint64_t passes, empty; /* drains, and those that found the ring empty before the deadline */
	uint64_t lat_max_ns;
	uint64_t util_samples;  /* samples with pages in use */
	double util_sum;
	uint64_t map_peak_pages; /* pages in use when the map was kept (0: none kept) */
	uint64_t map_pages, held_n;
	uint64_t next_sample_ns;
	struct nta_ctl_snapshot snap;
};
long nta_ctl_poll(struct nta_ctl *c, struct nta_ringbuf *rb, struct nta_ctl_poll *p);
/* Sample now (the loop's owner, or any thread while no loop runs). */
void nta_ctl_poll_sample(struct nta_ctl *c, struct nta_ctl_poll *p);
/* Ask a running loop to return (any thread). */
void nta_ctl_poll_stop(struct nta_ctl_poll *p);
/* The counters the loop last published, read consistently (any thread). */
void nta_ctl_poll_snapshot(const struct nta_ctl_poll *p, struct nta_ctl_snapshot *out);

#endif /* NTA_CTL_H */
