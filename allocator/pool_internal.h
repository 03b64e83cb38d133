/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * pool_internal.h - the page pool's state and the calls between its files:
 *
 *   pool.c          life cycle; pages in and out of the arena; the alloc cache
 *                   and the recycle ring; whole pages; feeding the pool's heaps
 *   pool_frag.c     fragments: placed by the pool's heap, held, let go, pinned
 *   pool_trim.c     a receive buffer cut to its frame: its head and tail back to the heap
 *   pool_dtor.c     a page whose last holder let go: its destructor's verdict
 *   pool_remote.c   puts from other threads, queued to the owner
 *   pool_publish.c  the counters, as the owner keeps them and as it publishes them
 *   pool_check.c    nta_pool_check() and the pool's page map
 *
 * One thread owns a pool and makes every call on it but nta_pool_put_remote[_bulk]().
 */
#ifndef NTA_POOL_INTERNAL_H
#define NTA_POOL_INTERNAL_H

#include <errno.h>

#include "nta_small.h"

enum pp_state {
	PP_NONE = 0, /* not the pool's */
	PP_CACHE,    /* idle, in the alloc cache */
	PP_RING,     /* idle, in the recycle ring */
	PP_PAGE,     /* handed out whole */
	PP_FRAG,     /* in one of the pool's heaps, holding fragments */
	PP_LARGE,    /* a combined block for a fragment larger than a page */
	PP_PENDING,  /* nobody holds it: waiting for a batch destructor */
};

struct pp_page {
	uint8_t state;
	uint8_t reserve; /* taken under the arena's reserve: never cached or ringed */
	uint8_t frag;    /* PP_PAGE, PP_LARGE: handed out as a fragment (nta_pool_alloc_frag) */
	uint8_t pad;
	uint32_t npages; /* PP_LARGE, or PP_PENDING of one */
};

/* A record's first four bytes (state, reserve, frag, pad) as one word: read as one load and written as
 * one store, so that a put reads what the allocation just wrote straight from the store buffer (a wider
 * load over narrower stores cannot be forwarded: it waits for them to retire). */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pp_head_of() lays out a record's first bytes little-endian"
#endif
_Static_assert(__builtin_offsetof(struct pp_page, reserve) == 1 && __builtin_offsetof(struct pp_page, frag) == 2,
	       "pp_head_of() knows the record's layout");

static inline uint32_t pp_head_of(uint8_t state, uint8_t reserve, uint8_t frag)
{
	return state | (uint32_t)reserve << 8 | (uint32_t)frag << 16;
}

static inline uint32_t pp_head(const struct pp_page *r)
{
	uint32_t w;

	__builtin_memcpy(&w, r, sizeof(w));
	return w;
}

static inline void pp_set_head(struct pp_page *r, uint32_t w)
{
	__builtin_memcpy(r, &w, sizeof(w));
}

/*
 * A posted remote put (pool_remote.c): 16 bytes, four to a cache line. The sequence is kept mod 2^32 (a
 * queue holds at most 2^24 slots, so that a slot's last lap and this one never compare equal), and the
 * time in ticks of 1,024 ns mod 2^32 (a wait longer than 73 minutes would read short).
 */
struct pool_remote_slot {
	uint32_t seq;    /* its position + 1 once published; its position + the queue's size once taken; 0 new */
	uint32_t posted; /* CLOCK_MONOTONIC >> REMOTE_TICK_SHIFT */
	uint64_t word;   /* the offset, and REMOTE_FIRST on the first of a batch */
};
_Static_assert(sizeof(struct pool_remote_slot) == 16, "four remote slots a cache line");
#define REMOTE_TICK_SHIFT 10
#define REMOTE_FIRST (1ull << 63)
#define REMOTE_NOT_A_BLOCK (~REMOTE_FIRST) /* what a negative offset is posted as: past any arena */

/* Is the slot at position pos published (posted, and not yet taken)? */
static inline bool remote_published(const struct pool_remote_slot *s, uint64_t pos)
{
	return __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == (uint32_t)(pos + 1);
}

static inline uint64_t remote_off(const struct pool_remote_slot *s)
{
	return s->word & ~REMOTE_FIRST;
}

struct nta_pool {
	struct nta_arena *a;
	/* the arena's geometry, read on the fast paths without going through a */
	uintptr_t live_base;       /* the live byte of the block at off is at live_base + (off >> cshift) */
	uint64_t data_off, data_end;
	uint64_t pmask;            /* page size - 1: an offset with none of these bits is a page's first byte */
	uint32_t cshift, pshift, cmask, cpp, words;
	uint32_t heap_kind;        /* of the pool's heaps (enum nta_heap_kind) */
	bool frag_fast;            /* the NTA places fragments, in the default geometry: pool_frag.c's fast paths */
	struct nta_hview hv;       /* frag_fast: the ordinary heap as those fast paths use it */
	uint64_t *bmp;
	struct nta_pool_config cfg;
	uint32_t slot;             /* in the arena's published pools; its heaps follow from it */
	uint32_t heap, rheap;      /* the pool's heaps: ordinary and reserve pages (not with NTA_POOL_PAGE) */
	struct pp_page *pg;        /* by arena page index */
	uint32_t npg;
	int64_t *cache;
	uint32_t cache_len;
	int64_t *ring;             /* owner-only: pages recycled outside the fast context */
	uint32_t ring_head, ring_tail, ring_mask;
	bool direct;               /* the put in progress is in the owner's fast context */
	uint32_t direct_cap;       /* no destructor, none batched (a page nobody holds is recycled as it is): the
	                              cache's size, which a direct put fills inline; else 0: never inline */
	nta_pool_dtor_fn dtor;
	void *dtor_ctx;
	int64_t *pending;
	size_t npending, pending_cap;
	int64_t *deferred;         /* blocks whose free waits for readers to unpin */
	size_t ndeferred, deferred_cap;
	struct nta_pool_pub *pub;  /* our slot in the arena */
	bool light_fences;         /* registered for readers' membarrier: no fence of our own */
	const uint32_t *nreaders;  /* the arena's count of attached readers (nta_readers_attached, one load) */
	/* the remote queue: the producers' tail and the owner's head each on a line of their own */
	struct pool_remote_slot *remote;
	uint32_t remote_mask;
	uint64_t remote_head;                                   /* the owner's: the next slot to take */
	uint64_t remote_tail __attribute__((aligned(64)));      /* reserved by producers (CAS) */
	uint64_t remote_full;                                   /* batches refused: the queue was full */
	uint64_t remote_head_pub __attribute__((aligned(64)));  /* the head, as producers read it */
	struct nta_pool_stats st __attribute__((aligned(64)));
};

static inline uint32_t page_of(const struct nta_pool *p, uint64_t off)
{
	return (uint32_t)((off - p->data_off) >> p->pshift);
}

static inline uint64_t off_of(const struct nta_pool *p, uint32_t page)
{
	return p->data_off + ((uint64_t)page << p->pshift);
}

/* The holders of the block starting at global chunk g (0: not handed out): what a reader's pin checks. */
static inline uint8_t *live_byte_at(const struct nta_pool *p, uint64_t g)
{
	return (uint8_t *)(p->live_base + (uintptr_t)g);
}

/* The same for the block starting at off. */
static inline uint8_t *live_byte(const struct nta_pool *p, uint64_t off)
{
	return live_byte_at(p, off >> p->cshift);
}

/* Is chunk c of page i the start of a live block, not parked (used, start, not cached)? words: the
 * bitmap words per page and kind, a constant on the fast paths. */
NTA_INLINE bool live_start(const struct nta_pool *p, uint32_t words, uint32_t i, uint32_t c)
{
	const uint64_t *w = p->bmp + (size_t)i * 3 * words + (c >> 6), bit = 1ull << (c & 63);

	return (w[0] & bit) && (w[words] & bit) && !(w[2 * words] & bit);
}

/* Which page does off name, and is it the start of a block the pool handed out? */
NTA_INLINE int resolve(const struct nta_pool *p, uint64_t off, uint32_t *page)
{
	if (unlikely(off < p->data_off || off >= p->data_end || (off & p->cmask)))
		return -EINVAL;
	const uint32_t i = page_of(p, off);
	const uint8_t state = p->pg[i].state;
	*page = i;
	if (likely(state == PP_FRAG)) { /* a live block starts here: used, start, not parked */
		const uint32_t c = (uint32_t)(off >> p->cshift) & (p->cpp - 1);
		if (likely(live_start(p, p->words, i, c)))
			return 0;
		return nta_heap_block_at(p->a, i, c);
	}
	switch (state) {
	case PP_PAGE:
	case PP_LARGE:
		return off == off_of(p, i) ? 0 : -ENOENT;
	case PP_NONE:
		return -ENOENT;
	default: /* in the cache, the ring, or waiting for its destructor: nobody holds it */
		return off == off_of(p, i) ? -EALREADY : -ENOENT;
	}
}

/* resolve(), and refuse what nobody holds (a pinned block let go of only waits for its reader). */
NTA_INLINE int held(const struct nta_pool *p, uint64_t off, uint32_t *page)
{
	int err = resolve(p, off, page);

	if (unlikely(err))
		return err;
	return __atomic_load_n(live_byte(p, off), __ATOMIC_RELAXED) ? 0 : -EALREADY;
}

/*
 * Nobody holds the block whose live byte is lb (unhold_for_readers: the block at off) now: the byte is
 * cleared, then the readers' pins are read.
 *
 * Clearing the live byte and then reading the pins needs a StoreLoad fence
 * against a reader that stores a pin and then reads the byte (reader.c).
 * The fence is asymmetric: this process registered for
 * MEMBARRIER_CMD_GLOBAL_EXPEDITED, and a reader issues that membarrier
 * between its store and its load, which runs a full barrier on our CPUs; so
 * here the compiler must only keep the store before the load. Both are
 * volatile (as the kernel's WRITE_ONCE and READ_ONCE): the compiler keeps
 * volatile accesses in order, and, unlike a barrier on all memory, may keep
 * in registers what it loaded before them. Without the registration, seq_cst.
 * Returns true if readers exist: a pin of off must then be looked for.
 */
NTA_INLINE bool unhold_at(struct nta_pool *p, uint8_t *lb)
{
	if (likely(p->light_fences)) {
		__atomic_store_n((volatile uint8_t *)lb, 0, __ATOMIC_RELAXED);
		return unlikely(__atomic_load_n((volatile const uint32_t *)p->nreaders, __ATOMIC_RELAXED) != 0);
	}
	__atomic_store_n(lb, 0, __ATOMIC_SEQ_CST);
	return unlikely(__atomic_load_n(p->nreaders, __ATOMIC_SEQ_CST) != 0);
}

NTA_INLINE bool unhold_for_readers(struct nta_pool *p, uint64_t off)
{
	return unhold_at(p, live_byte(p, off));
}

static inline uint32_t ring_count(const struct nta_pool *p)
{
	return p->ring_head - p->ring_tail;
}

static inline uint32_t pp_pages(const struct pp_page *r)
{
	return r->state == PP_LARGE || r->npages > 1 ? r->npages : 1;
}

/* pool.c */
void pool_recycle(struct nta_pool *p, uint32_t i, bool direct);
void pool_page_to_arena(struct nta_pool *p, uint32_t i);
bool pool_may_take(const struct nta_pool *p, uint32_t n);
void pool_took(struct nta_pool *p, uint32_t n, bool reserve);
bool pool_make_room(struct nta_pool *p, uint32_t n);

/* pool_dtor.c: page i (its pages no longer counted in use) has no holder left. */
void pool_page_unused(struct nta_pool *p, uint32_t i, bool direct);

/* Have other threads posted puts the owner has not applied? (Every allocation asks: inline, one load of
 * the producers' line, which stays shared while nothing is posted.) */
static inline bool pool_remote_pending(const struct nta_pool *p)
{
	return __atomic_load_n(&p->remote_tail, __ATOMIC_RELAXED) != p->remote_head;
}

/* pool_remote.c */
int pool_remote_init(struct nta_pool *p, uint32_t size);
void pool_remote_counts(const struct nta_pool *p, struct nta_pool_stats *st);

/* pool_publish.c */
void pool_publish(struct nta_pool *p);
void pool_snapshot(const struct nta_pool *p, struct nta_pool_stats *st);

#endif /* NTA_POOL_INTERNAL_H */
