/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nta_internal.h - the shared-memory layout and helpers used by the .c files.
 * Not installed; nothing here is part of the ABI except through nta.h.
 *
 * Layout of an arena (all offsets from the start of the region):
 *
 *   0          struct nta_hdr     magic, version, geometry, page runs, the heaps, counters
 *   desc_off   struct nta_page[max_pages]
 *   bmp_off    uint64_t[max_pages][3][words]   used, start, cached bits per chunk
 *   cache_off  uint32_t[NTA_MAX_HEAPS][cpp + 1][cache_depth]  per heap, per size: parked blocks
 *   live_off   uint8_t[max_pages * cpp]        page pool: holders of the block starting there (page aligned)
 *   readers_off struct nta_readers, then struct nta_reader_slot[NTA_MAX_READERS]
 *              (page aligned, the only part a reader maps writable)
 *   data_off   data pages (page aligned)
 *
 * A block is named by its offset; inside the allocator, chunks are named by
 * their global index (offset >> chunk_shift), which is never 0 for a data
 * chunk because the header occupies offset 0. Index 0 therefore means "none".
 *
 * Heaps. Placement inside pages belongs to a heap: its size-indexed free
 * lists (NTA), its partial slabs (pow2) or its current page (ppfrag), and
 * its size cache. Heap 0 is the arena's own (nta_alloc), heap 1 its reserve;
 * each page pool has two more (ordinary and reserve pages), whose pages come
 * from, and go back to, that pool rather than pages.c (a feeder, below).
 * Every page names the one heap it belongs to.
 */
#ifndef NTA_INTERNAL_H
#define NTA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nta.h"

#define NTA_API __attribute__((visibility("default")))
#define NTA_NOINLINE __attribute__((noinline))
#define NTA_INLINE static inline __attribute__((always_inline))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define NTA_MAX_CPP 256                    /* chunks per page */
#define NTA_MAX_WORDS (NTA_MAX_CPP / 64)   /* bitmap words per page and kind */
#define NTA_CLASS_WORDS ((NTA_MAX_CPP + 1 + 63) / 64)
#define NTA_RUN_EXACT 64                   /* page runs 1..63 have a list each */
#define NTA_RUN_CLASSES 128                /* then one list per power of two */
#define NTA_POW2_CLASSES 17
#define NTA_NODE_MAGIC 0x4e544146u         /* "NTAF" */
#define NTA_DEFAULT_CACHE 16

/* The heaps: the arena's two, then two per pool slot. */
#define NTA_MAX_HEAPS (2 + 2 * NTA_MAX_POOLS)
#define HEAP_ARENA 0u
#define HEAP_ARENA_RESERVE 1u
static inline uint32_t pool_heap(uint32_t slot, int reserve)
{
	return 2 + 2 * slot + (reserve ? 1 : 0);
}

enum nta_heap_kind {
	HEAP_NONE = 0,
	HEAP_NTA = NTA_KIND_NTA,   /* exact chunks, free lists by length, combined on free */
	HEAP_SLAB = NTA_KIND_POW2, /* power-of-two classes, a page per class */
	HEAP_PPFRAG = 3,           /* the kernel's page_pool_alloc_frag: carve the current page only */
	HEAP_WHOLE = 4,            /* whole pages only (a pool's NTA_POOL_PAGE): names the pages, places nothing */
};
#define HEAP_RESERVE 0x1 /* its pages come from the arena's reserve */

enum nta_page_kind {
	PG_UNTOUCHED = 0, /* at or above top: never used */
	PG_FREE,          /* in a free run of pages */
	PG_SMALL,         /* NTA: chunks of small blocks */
	PG_LARGE,         /* first page of a multi-page block */
	PG_LARGE_TAIL,    /* the other pages of it */
	PG_SLAB,          /* pow2: objects of one size class */
	PG_CARVE,         /* ppfrag: fragments carved in order, nothing reused until it is empty */
	PG_POOL,          /* a whole page a pool holds: its cache, its ring, handed out, or awaiting its destructor */
};

#define PG_RESERVE 0x1     /* taken under the reserve */
#define PG_DECOMMITTED 0x2 /* free, and its memory handed back */

struct nta_page {
	uint8_t kind;
	uint8_t flags;
	uint8_t cls;      /* PG_SLAB: log2 of the object size */
	uint8_t heap;     /* every page in use: the heap it belongs to (a pool's pages: its heaps) */
	uint16_t nfree;   /* PG_SMALL, PG_CARVE: free chunks; PG_SLAB: free objects */
	uint16_t live;    /* PG_SMALL/PG_SLAB/PG_CARVE: blocks in use or cached */
	uint32_t run;     /* PG_FREE: run length (at both ends); PG_LARGE: pages in the block */
	uint32_t next;    /* list links, page index + 1, 0 = none */
	uint32_t prev;
	uint32_t aux;     /* PG_SLAB: first free object index + 1, 0 = none; PG_SMALL: blocks parked in the cache */
};
_Static_assert(sizeof(struct nta_page) == 24, "nta_page layout");
_Static_assert(NTA_MAX_HEAPS <= 256, "a page names its heap in a byte");

/* A free region's first chunk holds this node (in-band, NTA only). */
struct nta_node {
	uint32_t next, prev; /* global chunk indices, 0 = none */
	uint32_t nchunks;
	uint32_t magic;
};

struct nta_classes {
	uint32_t heads[NTA_MAX_CPP + 1];     /* NTA: free regions by length in chunks */
	uint64_t nonempty[NTA_CLASS_WORDS];  /* bit k: heads[k] != 0 */
	uint32_t slabs[NTA_POW2_CLASSES];    /* pow2: partial slabs by class, page index + 1 */
	uint32_t pad;
};

/* A heap: where blocks go inside the pages it holds (see the layout above). */
struct nta_heap {
	uint32_t kind;          /* enum nta_heap_kind; HEAP_NONE: a free slot */
	uint32_t flags;         /* HEAP_RESERVE */
	uint32_t owner;         /* the pid of the pool's process; 0: the arena's own */
	uint32_t pages;         /* pages holding its blocks now (PG_SMALL, PG_SLAB or PG_CARVE) */
	uint32_t peak_pages;
	uint32_t cur;           /* HEAP_PPFRAG: the current page + 1, 0 = none */
	uint32_t cursor;        /* HEAP_PPFRAG: its first chunk not yet carved */
	uint32_t cache_limit;   /* HEAP_NTA: blocks its cache parks per length (0 for a reserve heap) */
	uint32_t parked;        /* HEAP_NTA: blocks its cache parks, of every length (the sum of cache_count) */
	uint32_t pad;
	uint64_t live;          /* blocks taken from it: in use, or parked in its cache */
	uint64_t handed;        /* their bytes (chunks or objects) */
	uint64_t free_chunks;   /* free chunks in its pages */
	struct nta_classes lists;
	uint32_t cache_count[NTA_MAX_CPP + 1]; /* blocks parked, by length in chunks */
};

struct nta_hdr {
	char magic[8];
	uint32_t version, kind;
	uint32_t page_size, chunk_size, page_shift, chunk_shift;
	uint32_t cpp, words;            /* chunks per page; bitmap words per page and kind */
	uint32_t max_pages, reserve_pages, cache_depth, flags;
	uint64_t desc_off, bmp_off, cache_off, data_off, total_size;
	uint64_t live_off, readers_off;
	uint32_t owner_pid, hdr_size;
	/* page allocator */
	uint32_t top;                   /* pages [0, top) have been used */
	uint32_t pad;
	uint32_t run_heads[NTA_RUN_CLASSES];
	uint64_t run_nonempty[NTA_RUN_CLASSES / 64];
	struct nta_heap heaps[NTA_MAX_HEAPS];
	struct nta_stats st;            /* live counters; largest_free computed on demand */
};

/*
 * A zero-copy reader's slot: who it is and what it pins. A pinned block's
 * free is deferred until no live reader lists it (see reader.c, pool.c).
 */
#define NTA_MAX_READERS 8
#define NTA_READER_PINS 510
struct nta_reader_slot {
	uint32_t pid;       /* 0: free slot (claimed with a compare-and-swap) */
	uint32_t pad;
	uint64_t starttime; /* of pid, from /proc: a reused pid is not the reader */
	uint64_t pins[NTA_READER_PINS]; /* offsets, 0 = empty */
};
_Static_assert(sizeof(struct nta_reader_slot) == 4096, "reader slot is one page");

/* A pool's published counters, under a sequence lock (odd: being written). */
struct nta_pool_pub {
	uint32_t seq, pad;
	struct nta_pool_info info;
};

/* The page before the slots: what readers and the owner both write, and
 * what the owner publishes for others to read. */
struct nta_readers {
	uint32_t nreaders; /* attached readers (atomic): the owner scans pins only when > 0 */
	uint32_t pad;
	struct nta_pool_pub pools[NTA_MAX_POOLS];
	uint8_t pad2[4096 - 8 - NTA_MAX_POOLS * sizeof(struct nta_pool_pub)];
};
_Static_assert(sizeof(struct nta_readers) == 4096, "readers page");
#define NTA_READERS_BYTES (sizeof(struct nta_readers) + NTA_MAX_READERS * sizeof(struct nta_reader_slot))

/*
 * Where a heap's pages come from and go back to, in this process: a pool
 * hands its heaps pages from its cache, its ring or the arena, and takes
 * back the pages they empty. The arena's own heaps have none (pages.c).
 */
struct nta_feed {
	int64_t (*get)(void *ctx, bool reserve); /* a page index, or -errno */
	void (*put)(void *ctx, uint32_t page);   /* a page the heap no longer uses */
	void *ctx;
};

/*
 * The process-local handle. Besides the mapping it caches the geometry and
 * the addresses derived from the header's offsets (never stored in shared
 * memory): the fast paths read these instead of the header, whose 64-bit
 * fields the compiler must assume every bitmap store may change.
 */
struct nta_arena {
	struct nta_hdr *h;
	uint8_t *base;
	size_t size;
	int fd;
	bool writable, creator;
	char *path;
	/* derived, read-only after open */
	struct nta_page *desc;
	uint64_t *bmp;
	uint32_t *cache;        /* [NTA_MAX_HEAPS][cpp + 1][depth] */
	uint8_t *live;          /* by global chunk index - data_off / chunk */
	struct nta_readers *rd;
	struct nta_reader_slot *readers;
	struct nta_stats *st;   /* h->st */
	struct nta_heap *heaps; /* h->heaps */
	/* the geometry as validated when the arena was created or attached: what every bound a reader
	 * takes is checked against (the header in shared memory may change under it) */
	uint32_t kind, page_size, page_shift, chunk_shift, chunk_mask, cpp, words, depth;
	uint32_t chunk_size, max_pages, reserve_pages, cfg_flags;
	uint64_t data_off;
	uint32_t gpage0;        /* global chunk index >> (page_shift - chunk_shift) of page 0 */
	bool geom_default;      /* page, chunk and cache depth are the defaults (nta_small.h: NTA_GEOM_DEFAULT) */
	bool fast;              /* an NTA arena of the default geometry, writable: alloc.c's fast paths, one test */
	struct nta_feed feed[NTA_MAX_HEAPS];
};

/* Private zeroed memory whose pages take memory only once touched (a pool's record of every arena page:
 * calloc cleared all of them when it reused the heap, 96 KiB for 12,352 pages before the first packet);
 * NULL when there is none. */
void *nta_zero_map(size_t bytes);
void nta_zero_unmap(void *m, size_t bytes);

/* Fill in the derived fields of a from the geometry of g, a header validated (or made) before
 * mapping (arena.c). */
void nta_arena_derive(struct nta_arena *a, const struct nta_hdr *g);

/* The pages a reader may walk: the header's top, never past the validated geometry. */
static inline uint32_t nta_top(const struct nta_arena *a)
{
	uint32_t top = __atomic_load_n(&a->h->top, __ATOMIC_RELAXED);
	return top < a->max_pages ? top : a->max_pages;
}
/* Is pid, started at starttime, still running? (arena.c) */
bool nta_proc_alive(uint32_t pid, uint64_t starttime);
struct nta_arena *nta_arena_attach_reader(const char *path);
/* reader.c: is off pinned by a live reader? (scans the slots; the caller has
 * cleared the block's live byte with a seq_cst store) */
bool nta_pinned(const struct nta_arena *a, uint64_t off);
/* reader.c: clear the slots of readers that died; returns how many */
long nta_readers_reclaim(struct nta_arena *a);

/* -- addressing ---------------------------------------------------------- */

static inline struct nta_page *pg(const struct nta_arena *a, uint32_t p)
{
	return a->desc + p;
}

static inline uint64_t *bmp(const struct nta_arena *a, uint32_t p, int which)
{
	return a->bmp + ((size_t)p * 3 + which) * a->words;
}
#define BMP_USED 0
#define BMP_START 1
#define BMP_CACHED 2

/* These read the validated geometry kept in the handle, never the shared header's (which a reader
 * must not trust: it may be damaged, or change under it). */
static inline uint64_t page_off(const struct nta_arena *a, uint32_t p)
{
	return a->data_off + ((uint64_t)p << a->page_shift);
}

/* global chunk index of chunk c of page p */
static inline uint32_t gchunk(const struct nta_arena *a, uint32_t p, uint32_t c)
{
	return (uint32_t)(page_off(a, p) >> a->chunk_shift) + c;
}

static inline uint32_t gchunk_page(const struct nta_arena *a, uint32_t g)
{
	return (uint32_t)((((uint64_t)g << a->chunk_shift) - a->data_off) >> a->page_shift);
}

static inline uint32_t gchunk_index(const struct nta_arena *a, uint32_t g)
{
	return g & (a->cpp - 1);
}

static inline struct nta_node *node(const struct nta_arena *a, uint32_t g)
{
	return (struct nta_node *)(a->base + ((uint64_t)g << a->chunk_shift));
}

static inline struct nta_heap *heap(const struct nta_arena *a, uint32_t h)
{
	return &a->h->heaps[h];
}

/*
 * Does heap h count, in each page's descriptor (aux), the blocks of the page that its cache parks? A
 * pool's heaps do: a pool gives back a page whose every block is parked. The arena's own never give a
 * page back for that, and their fast paths leave the descriptor alone (nta_check proves aux == 0).
 */
static inline bool heap_counts_parked(uint32_t h)
{
	return h > HEAP_ARENA_RESERVE;
}

/* Entry i of heap h's cache of blocks of n chunks: the entries of one length side by side. (Laid out by
 * depth then length instead, a heap 16 deep parking few lengths touched 8 KiB more of it.) */
static inline size_t cache_index(uint32_t cpp, uint32_t depth, uint32_t h, uint32_t n, uint32_t i)
{
	return ((size_t)h * (cpp + 1) + n) * depth + i;
}

static inline uint32_t *cache_at(const struct nta_arena *a, uint32_t h, uint32_t n, uint32_t i)
{
	return a->cache + cache_index(a->cpp, a->depth, h, n, i);
}

/* -- bitmaps (at most NTA_MAX_WORDS words) --------------------------------- */

static inline bool bit_test(const uint64_t *w, uint32_t i)
{
	return (w[i >> 6] >> (i & 63)) & 1;
}

static inline void bit_set(uint64_t *w, uint32_t i)
{
	w[i >> 6] |= 1ull << (i & 63);
}

static inline void bit_clear(uint64_t *w, uint32_t i)
{
	w[i >> 6] &= ~(1ull << (i & 63));
}

/* mask of bits [lo, hi) within word number wi */
static inline uint64_t word_mask(uint32_t wi, uint32_t lo, uint32_t hi)
{
	uint32_t b0 = wi * 64, b1 = b0 + 64;
	uint32_t s = lo > b0 ? lo - b0 : 0, e = hi < b1 ? hi - b0 : 64;
	if (s >= e)
		return 0;
	uint64_t m = e == 64 ? ~0ull : (1ull << e) - 1;
	return m & ~((1ull << s) - 1);
}

/* Set (or clear) bits [lo, hi), lo < hi: the first and last words by their masks, whole words between
 * (word_mask() a word at a time cost 50 instructions a block carved). */
static inline void range_write(uint64_t *w, uint32_t lo, uint32_t hi, bool set)
{
	const uint32_t wl = lo >> 6, wh = (hi - 1) >> 6;
	const uint64_t first = ~0ull << (lo & 63), last = ~0ull >> (63 - ((hi - 1) & 63));

	if (wl == wh) {
		w[wl] = set ? w[wl] | (first & last) : w[wl] & ~(first & last);
		return;
	}
	w[wl] = set ? w[wl] | first : w[wl] & ~first;
	for (uint32_t wi = wl + 1; wi < wh; wi++)
		w[wi] = set ? ~0ull : 0;
	w[wh] = set ? w[wh] | last : w[wh] & ~last;
}

static inline void range_set(uint64_t *w, uint32_t lo, uint32_t hi)
{
	range_write(w, lo, hi, true);
}

static inline void range_clear(uint64_t *w, uint32_t lo, uint32_t hi)
{
	range_write(w, lo, hi, false);
}

/* are all bits of [lo, hi) set? */
static inline bool range_all(const uint64_t *w, uint32_t lo, uint32_t hi)
{
	for (uint32_t wi = lo >> 6; wi <= (hi - 1) >> 6; wi++) {
		uint64_t m = word_mask(wi, lo, hi);
		if ((w[wi] & m) != m)
			return false;
	}
	return true;
}

/* is any bit of [lo, hi) set? */
static inline bool range_any(const uint64_t *w, uint32_t lo, uint32_t hi)
{
	if (lo >= hi)
		return false;
	for (uint32_t wi = lo >> 6; wi <= (hi - 1) >> 6; wi++)
		if (w[wi] & word_mask(wi, lo, hi))
			return true;
	return false;
}

/* highest set bit below i, or -1 */
static inline int bit_prev_set(const uint64_t *w, uint32_t i)
{
	if (i == 0)
		return -1;
	int wi = (int)((i - 1) >> 6);
	uint64_t m = w[wi] & word_mask((uint32_t)wi, 0, i);
	for (;;) {
		if (m)
			return wi * 64 + 63 - __builtin_clzll(m);
		if (--wi < 0)
			return -1;
		m = w[wi];
	}
}

/* lowest set bit at or above i (below n), or n */
static inline uint32_t bit_next_set(const uint64_t *w, uint32_t i, uint32_t n)
{
	if (i >= n)
		return n;
	uint32_t wi = i >> 6, last = (n - 1) >> 6;
	uint64_t m = w[wi] & word_mask(wi, i, n);
	for (;;) {
		if (m) {
			uint32_t b = wi * 64 + (uint32_t)__builtin_ctzll(m);
			return b < n ? b : n;
		}
		if (++wi > last)
			return n;
		m = w[wi] & word_mask(wi, 0, n);
	}
}

/* -- counters ------------------------------------------------------------ */

#define PEAK(st, field, peak) do { if ((st)->field > (st)->peak) (st)->peak = (st)->field; } while (0)

/* Does heap h keep what it empties (a pool's ordinary heap: its last page, a slab class's last slab, the
 * current page it carves)? The arena's heaps give every empty page back, and a pool's reserve heap gives
 * its pages back to the reserve at once, so that what was taken from it is returned. */
static inline bool nta_heap_keeps_idle(const struct nta_arena *a, uint32_t h)
{
	return a->feed[h].put && !(a->heaps[h].flags & HEAP_RESERVE);
}

/* Of a heap a pool feeds: does it keep its last page when it empties (it is the ordinary one, and that
 * page is its last)? */
static inline bool heap_keeps_last(const struct nta_heap *hp)
{
	return !(hp->flags & HEAP_RESERVE) && hp->pages == 1;
}

/* A pool's heap keeps its last page when it empties. */
static inline bool nta_heap_keeps(const struct nta_arena *a, uint32_t h)
{
	return a->feed[h].put && heap_keeps_last(&a->heaps[h]);
}

/* -- across files ---------------------------------------------------------- */

/* pages.c: whole pages. */
int64_t nta_pages_get(struct nta_arena *a, uint32_t n, bool reserve);
void nta_pages_put(struct nta_arena *a, uint32_t p, uint32_t n);
uint32_t nta_run_class(uint32_t n);
uint64_t nta_pages_budget(const struct nta_arena *a, bool reserve);

/* heap.c: a heap's pages (from its feeder or pages.c), its blocks whatever its kind. */
int64_t nta_heap_page_get(struct nta_arena *a, uint32_t h, uint8_t kind);
void nta_heap_page_put(struct nta_arena *a, uint32_t h, uint32_t p);
int nta_heap_open(struct nta_arena *a, uint32_t h, uint32_t kind, uint32_t flags, const struct nta_feed *feed);
/* Give back what the heap holds for nothing (its cache, the empty pages it keeps, an empty current
 * page); returns how many pages still hold its blocks. */
long nta_heap_drain(struct nta_arena *a, uint32_t h);
/* Would nta_heap_drain give anything back? (Cheap: what a failed allocation asks before it drains.) */
bool nta_heap_idle(const struct nta_arena *a, uint32_t h);
/* Close a heap none of whose pages remain anywhere (the caller knows): 0, or -EBUSY. */
int nta_heap_close(struct nta_arena *a, uint32_t h);
/* A small block (size <= page) from heap h; its offset or -errno. */
int64_t nta_heap_alloc(struct nta_arena *a, uint32_t h, size_t size);
/* Free the live block at off in heap h, its length read from the bitmaps; *handed gets its bytes.
 * 0, or -errno and nothing changed. */
int nta_heap_free_block(struct nta_arena *a, uint32_t h, uint64_t off, uint64_t *handed);
/* Is off the start of a live block of a heap page, 0; else -ENOENT, -EALREADY (free or parked). */
int nta_heap_block_at(const struct nta_arena *a, uint32_t p, uint32_t c);

/* nta.c: the NTA's small blocks on a heap. */
int64_t nta_small_alloc_regions(struct nta_arena *a, uint32_t h, uint32_t n);
int nta_small_free(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n);
uint32_t nta_small_trim(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t m);
uint32_t nta_small_cut_head(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t k);
int nta_check_small_free(const struct nta_arena *a, uint32_t p, uint32_t c, uint32_t n);
void nta_small_flush(struct nta_arena *a, uint32_t h);
void nta_small_release_empty(struct nta_arena *a, uint32_t h);
bool nta_small_idle(const struct nta_arena *a, uint32_t h);

/* pow2.c: the slab baseline on a heap. */
int64_t nta_slab_alloc(struct nta_arena *a, uint32_t h, size_t size);
int nta_slab_free(struct nta_arena *a, uint32_t p, uint64_t off, size_t size);
uint32_t nta_pow2_class(const struct nta_arena *a, size_t size);
uint32_t nta_pow2_pages(uint64_t npages);
void nta_slab_release_empty(struct nta_arena *a, uint32_t h);
bool nta_slab_idle(const struct nta_arena *a, uint32_t h);

/* ppfrag.c: the kernel's page_pool_alloc_frag on a heap. */
int64_t nta_ppfrag_alloc(struct nta_arena *a, uint32_t h, uint32_t n);
int nta_ppfrag_free(struct nta_arena *a, uint32_t p, uint32_t c, uint32_t n);
void nta_ppfrag_drop(struct nta_arena *a, uint32_t h);

/* alloc.c: the front door's accounting and blocks of whole pages. */
void nta_account_alloc(struct nta_arena *a, size_t size, uint64_t handed);
void nta_account_free(struct nta_arena *a, size_t size, uint64_t handed);
/* npages whole pages as one block of heap h (a reserve heap's from the reserve); the first page or -errno. */
int64_t nta_large_get(struct nta_arena *a, uint32_t h, uint32_t npages);
void nta_large_put(struct nta_arena *a, uint32_t p);

#endif /* NTA_INTERNAL_H */
