/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nta.h - the Network Tree Allocator over a shared-memory arena.
 *
 * One arena is one shared-memory region: a header at offset 0 (magic,
 * version, geometry), page descriptors, per-page chunk bitmaps, and the data
 * pages. Everything inside holds offsets, never pointers, so another process
 * can attach (read-only) and read it.
 *
 * Allocators (chosen when the arena is created):
 *   NTA_KIND_NTA   exact-size allocations of ceil(size / chunk) chunks; on
 *                  free a block is combined with its free neighbours; a small
 *                  per-size cache in front of combining; blocks larger than a
 *                  page are runs of whole pages ("combined" blocks).
 *   NTA_KIND_POW2  the baseline: one size class per power of two, objects
 *                  packed in pages (SLAB-like); large blocks are power-of-two
 *                  runs of pages.
 *
 * Error rule: functions returning int, long or int64_t return a value >= 0 on
 * success and a negative errno on failure. Functions returning a pointer
 * return NULL and set errno. A failed call changes nothing.
 *
 * Concurrency: an arena is not locked. The caller serialises every call that
 * takes a non-const arena; const calls may run in a reader process while the
 * owner writes (they then see a snapshot that may be torn).
 */
#ifndef NTA_H
#define NTA_H

#ifndef NTA_CDEF /* the binding feeds this header, preprocessed, to cffi */
#include <stddef.h>
#include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define NTA_MAGIC "NTAARENA"
#define NTA_VERSION 10

enum nta_kind {
	NTA_KIND_NTA = 1,
	NTA_KIND_POW2 = 2,
};

#define NTA_PAGE_SIZE_DEFAULT 4096
#define NTA_CHUNK_SIZE_DEFAULT 32 /* the L1 line, as the NTA's author chose */

/* nta_config.flags */
#define NTA_ARENA_UNLINK 0x1u /* creator unlinks the path on close */

/* nta_alloc flags */
#define NTA_F_RESERVE 0x1u /* may take pages from the reserve */

/* nta_page_map() cell values, one per chunk */
enum nta_cell {
	NTA_CELL_UNTOUCHED = 0, /* above the arena's top, or handed back */
	NTA_CELL_FREE = 1,
	NTA_CELL_USED = 2,   /* in a live small allocation */
	NTA_CELL_CACHED = 3, /* freed, parked in the size cache */
	NTA_CELL_LARGE = 4,  /* in a live multi-page block */
	NTA_CELL_SLACK = 5,  /* never written by a page map: pictures mark with it the chunks a block
	                      * holds beyond the bytes asked for (see nta_alloc_size) */
};

struct nta_config {
	uint32_t kind;          /* enum nta_kind; 0 means NTA_KIND_NTA */
	uint32_t page_size;     /* power of two, 4096..65536; 0 means NTA_PAGE_SIZE_DEFAULT */
	uint32_t chunk_size;    /* power of two, >= 16, page_size/chunk_size <= 256; 0: NTA_CHUNK_SIZE_DEFAULT */
	uint32_t max_pages;     /* data pages reserved up front; required */
	uint32_t reserve_pages; /* of max_pages, only for NTA_F_RESERVE allocations */
	uint32_t cache_depth;   /* per-size cache entries; 0 means 16; NTA_CACHE_OFF disables */
	uint32_t flags;         /* NTA_ARENA_* */
	uint32_t pad;
};
#define NTA_CACHE_OFF 0xffffffffu
#define NTA_CACHE_MAX 256

struct nta_stats {
	uint64_t allocs, frees, alloc_fails, bad_frees;
	uint64_t cache_hits, cache_flushes;
	uint64_t live_allocs;
	uint64_t bytes_requested;   /* live: sizes as given */
	uint64_t bytes_handed;      /* live: chunks or pages actually given out */
	uint64_t peak_bytes_requested, peak_bytes_handed;
	uint64_t pages_max, pages_in_use, peak_pages_in_use;
	uint64_t pages_committed, peak_pages_committed, pages_trimmed;
	uint64_t small_pages, large_pages;
	uint64_t free_chunks;       /* free chunks inside small pages */
	uint64_t cached_blocks;
	uint64_t largest_free;      /* bytes: largest block allocatable now without growing */
	uint64_t reserve_pages, reserve_pages_in_use, peak_reserve_pages_in_use;
	uint64_t reserve_allocs;    /* allocations that took reserve memory */
	uint64_t reserve_denied;    /* ordinary allocations refused although the reserve had room */
	uint64_t arena_bytes;       /* size of the whole shared region (header + data) */
	uint64_t data_off;          /* offset of the first data page */
};

struct nta_arena;

/* Create an arena. path: a file under /dev/shm (created O_EXCL, mode 0600),
 * or NULL for an anonymous memfd. */
struct nta_arena *nta_arena_create(const char *path, const struct nta_config *cfg);
/* Attach to an existing arena by path; validates the header. Read-only unless
 * writable is non-zero. */
struct nta_arena *nta_arena_attach(const char *path, int writable);
/* Unmap; the creator with NTA_ARENA_UNLINK also unlinks the path. */
void nta_arena_close(struct nta_arena *a);
int nta_arena_config(const struct nta_arena *a, struct nta_config *cfg);
int nta_arena_fd(const struct nta_arena *a);
/* Base address of the mapping in this process: data lives at base + offset. */
void *nta_arena_base(const struct nta_arena *a);
/* Hand the memory of every whole free run of pages back to the kernel.
 * Returns the number of pages handed back. */
long nta_arena_trim(struct nta_arena *a);

/* Allocate size bytes; returns the block's offset (> 0). */
int64_t nta_alloc(struct nta_arena *a, size_t size, unsigned flags);
/* The bytes an allocation of size takes in this arena (chunks, a power of
 * two, or whole pages, by kind); 0 when it cannot be allocated at all. */
uint64_t nta_alloc_size(const struct nta_arena *a, size_t size);
/* Free the block at off, allocated with a size of the same granularity. */
int nta_free(struct nta_arena *a, uint64_t off, size_t size);
/* Allocate n blocks; offs[i] gets the offset or 0 when that one failed.
 * Returns the number allocated. */
long nta_alloc_bulk(struct nta_arena *a, const uint32_t *sizes, int64_t *offs, size_t n,
		    unsigned flags);
/* Free n blocks; each failing free changes nothing and the rest go on.
 * Returns 0, or the first failure's negative errno with *first_bad its index. */
long nta_free_bulk(struct nta_arena *a, const int64_t *offs, const uint32_t *sizes, size_t n,
		   size_t *first_bad);
/* Free everything in the per-size cache into the allocator proper. */
int nta_cache_flush(struct nta_arena *a);

/* Walk the whole arena and prove that bitmaps, free lists, caches and
 * counters agree. Returns 0, or -EUCLEAN with the first disagreement in why. */
int nta_check(const struct nta_arena *a, char *why, size_t whylen);
int nta_stats(const struct nta_arena *a, struct nta_stats *st);
/* One cell (enum nta_cell) per chunk for pages [0, npages): map holds
 * npages * (page_size / chunk_size) bytes. Returns the cells written. */
long nta_page_map(const struct nta_arena *a, uint8_t *map, size_t npages);
/* Free small regions by size in chunks: hist[k] counts regions of k chunks,
 * k < nbins (the last bin takes all larger); free page runs are counted in
 * *page_runs when non-NULL. Returns the number of free regions. */
long nta_free_histogram(const struct nta_arena *a, uint64_t *hist, size_t nbins, uint64_t *page_runs);

/*
 * The page pool: per device and RX queue, over an arena, after the kernel's
 * page_pool. The pool owns pages: it maps them once, and they recycle,
 * mapped, through a LIFO alloc cache (owner side) and a recycle ring (any
 * side); a page's destructor runs when nothing holds it any more: recycle
 * (default), steal (the destructor keeps the page: it comes back with one
 * holder) or release (back to the arena, unmapped).
 *
 * Where a fragment goes inside the pool's pages is its allocator's (the
 * config's `allocator`), over a heap of the pool's own: pages come to it from
 * the pool's cache, ring or the arena, and a page it empties goes back to
 * the pool's cache or ring, still mapped:
 *   NTA_POOL_NTA    exact size in chunks, in any partly used page of the
 *                   pool, combined with its free neighbours when freed;
 *   NTA_POOL_SLAB   the power-of-two baseline (pages of one size class);
 *   NTA_POOL_PPFRAG the kernel's page_pool_alloc_frag: carved from the
 *                   current page only, nothing reused until a page is empty;
 *   NTA_POOL_PAGE   one page per frame (drivers without the frag API).
 * Fragments larger than a page are combined blocks of whole pages (a power of
 * two of them with SLAB). A fragment's holders are counted (get/put).
 *
 * Memory at the limit: with a budget, a pool holds at most that many
 * ordinary pages (handed out, holding fragments, idle in its cache and ring);
 * an allocation that needs another fails with -ENOMEM, after the pool's heap
 * has given back what it kept idle. With NTA_F_RESERVE, an allocation that
 * ordinary memory cannot hold is placed in the arena's reserve, apart from
 * the budget; a reserve page never enters the cache or the ring (the kernel's
 * pfmemalloc rule): it goes back to the reserve when its last holder is done.
 *
 * Concurrency: one thread owns a pool and makes every call on it, except
 * nta_pool_put_remote() and _bulk(), which any thread may call: they post
 * puts to the owner through a lock-free queue made with the pool (one
 * compare-and-swap a batch, nothing allocated; a full queue refuses the
 * batch with -EAGAIN), and the owner applies them on its next allocation,
 * on nta_pool_drain_remote() and while destroy waits. The counters use the
 * kernel's names.
 */
struct nta_pool;

enum nta_pool_alloc {
	NTA_POOL_NTA = 0,
	NTA_POOL_SLAB = 1,
	NTA_POOL_PPFRAG = 2,
	NTA_POOL_PAGE = 3,
};

struct nta_pool_config {
	uint32_t cache_size;  /* LIFO alloc cache; 0 means 128 */
	uint32_t refill;      /* pages moved ring -> cache, or taken from the arena, at once; 0 means 64 */
	uint32_t ring_size;   /* recycle ring, a power of two; 0 means 1024 */
	uint32_t map_cost_ns; /* modelled cost of one DMA map or unmap (an IOMMU); 0 means free */
	uint32_t ifindex, queue;
	uint32_t flags;       /* NTA_POOL_BATCH_DTOR */
	uint32_t allocator;   /* enum nta_pool_alloc: who places fragments */
	uint32_t remote_size; /* remote puts the queue holds, a power of two; 0 means 1024 */
	uint32_t budget;      /* ordinary pages the pool may hold (handed out, holding fragments, idle in its
	                       * cache and ring); 0: no budget. The arena's reserve is apart from it. */
};
#define NTA_POOL_BATCH_DTOR 0x1u /* pages nobody holds wait for nta_pool_dtor_take() */

/* nta_pool_put flags */
#define NTA_POOL_DIRECT 0x1u /* the owner's context: may recycle into the alloc cache */

/* destructor verdicts */
enum nta_dtor_verdict {
	NTA_DTOR_RECYCLE = 0,
	NTA_DTOR_STEAL = 1,
	NTA_DTOR_RELEASE = 2,
};
typedef int (*nta_pool_dtor_fn)(void *ctx, struct nta_pool *pool, uint64_t page);

/* The pool's counters, in groups (as the kernel's page_pool_stats has alloc
 * and recycle); user space takes the names and groups from this type. */
struct nta_pool_stats {
	struct nta_pool_alloc_stats { /* as the kernel's page_pool_alloc_stats */
		uint64_t fast, slow, slow_high_order, empty, refill, waive;
		uint64_t alloc_fails;   /* allocations refused (arena empty, no reserve allowed) */
	} alloc;
	struct nta_pool_recycle_stats { /* as page_pool_recycle_stats */
		uint64_t cached, cache_full, ring, ring_full, released_refcnt;
	} recycle;
	struct nta_pool_page_stats { /* the mapping model and pages in flight (hold - release) */
		uint64_t maps, unmaps, hold, release, inflight;
		uint64_t pages_in_use;  /* handed out whole, or holding live fragments */
		uint64_t peak_pages_in_use;
		uint64_t cache_len, ring_len;
		uint64_t peak_idle;     /* most pages mapped and idle (cache + ring) at once */
		uint64_t reserve_pages; /* pages in flight that came from the arena's reserve */
	} pages;
	struct nta_pool_frag_stats {
		uint64_t frags, frag_bytes; /* live fragments and the bytes they were handed */
		uint64_t trims, trimmed_bytes; /* nta_pool_frag_trim() calls that gave bytes back, and the bytes */
		uint64_t pinned;            /* blocks let go of, their free deferred by a reader's pin */
		uint64_t readers_reclaimed; /* readers that died holding pins */
	} fragments;
	struct nta_pool_dtor_stats {
		uint64_t dtor_calls, dtor_steal, dtor_release, dtor_pending;
	} destructor;
	struct nta_pool_remote_stats { /* puts posted by other threads (nta_pool_put_remote[_bulk]) */
		uint64_t posted, batches;  /* puts posted, and the batches they came in (applied ones) */
		uint64_t applied, bad;     /* applied by the owner; and those the pool refused then (not held) */
		uint64_t pending;          /* posted, not yet applied */
		uint64_t drains, full;     /* drains that applied some; batches refused, the queue full */
		uint64_t max_wait_ns;      /* the longest a put waited from its post to being applied */
	} remote;
	struct nta_pool_budget_stats { /* the ordinary pages the pool holds, against its budget */
		uint64_t budget_pages;     /* the budget (0: none) */
		uint64_t budget_held;      /* ordinary pages held now (in use, cache, ring) */
		uint64_t budget_peak;      /* and at most */
		uint64_t budget_refused;   /* requests for a page the budget refused (an allocation's, and its retry's) */
		uint64_t budget_reclaims;  /* times the pool gave back what it kept idle, and asked again */
	} budget;
	struct nta_pool_reserve_stats { /* bean counting: what the pool takes from the arena's reserve comes back */
		uint64_t reserve_taken;    /* reserve pages taken */
		uint64_t reserve_returned; /* and given back (taken - returned: pages.reserve_pages) */
		uint64_t reserve_peak;     /* the most reserve pages held at once */
		uint64_t reserve_min_free; /* the fewest pages the arena's reserve had free while the pool lived */
		uint64_t reserve_allocs;   /* fragments and pages placed in reserve memory */
		uint64_t reserve_exhausted; /* reserve allocations refused: the reserve had no room either */
	} reserve;
};

/* errno EUSERS: the arena has NTA_MAX_POOLS pools already; EINVAL: a bad config. */
struct nta_pool *nta_pool_create(struct nta_arena *a, const struct nta_pool_config *cfg);
/* Free the pool: empties cache and ring into the arena, then refuses with
 * -EBUSY while pages are in flight, waiting up to timeout_ms for them (puts
 * from other threads). On -EBUSY, up to n in-flight page offsets go into
 * pages and *count gets how many are in flight; the pool stays usable. */
int nta_pool_destroy(struct nta_pool *p, int timeout_ms, int64_t *pages, size_t n, size_t *count);
int64_t nta_pool_alloc_page(struct nta_pool *p, unsigned flags);
int64_t nta_pool_alloc_frag(struct nta_pool *p, size_t size, unsigned flags);
/* The bytes a fragment of size takes in this pool (chunks, a power of two, a page or pages, by its
 * allocator); 0 for a size it cannot take. */
uint64_t nta_pool_frag_size(const struct nta_pool *p, size_t size);
/* Cut the fragment at off (held; of a page or less) down to size bytes, its tail back to the pool's heap
 * at once (combined with free neighbours), as a receive buffer once its frame's length is known. Returns
 * the bytes it now has; -EOPNOTSUPP unless the pool's allocator is NTA_POOL_NTA and the fragment is of a
 * page or less (a size class, the current page, a whole page or a run of them cannot give part back);
 * what nta_pool_put returns for a bad offset; -EINVAL for size 0. A size at or over what it has changes nothing. */
long nta_pool_frag_trim(struct nta_pool *p, uint64_t off, size_t size);
/* Cut the fragment at off down to the size bytes that start head bytes into it (head a multiple of the
 * chunk), what precedes and what follows back to the pool's heap at once: a receive buffer of an aligned
 * UMEM chunk whose frame landed past the headroom. Returns the fragment's offset now (off + head); what
 * nta_pool_frag_trim returns for an offset or pool it refuses; -EINVAL for size 0, a head not a multiple of
 * the chunk, or head and size past the block; -EBUSY while more than one holder holds it or a reader pins
 * it (they know it by off). Puts other threads posted are applied first; nothing else changes on an error. */
int64_t nta_pool_frag_cut(struct nta_pool *p, uint64_t off, size_t head, size_t size);
/* Allocate n fragments; offs[i] = 0 where one failed. Returns the number allocated. */
long nta_pool_alloc_frag_bulk(struct nta_pool *p, const uint32_t *sizes, int64_t *offs, size_t n,
			      unsigned flags);
/* Does the block at off (handed out) lie in reserve memory (the kernel's page_is_pfmemalloc)? 1 or 0, or
 * what nta_pool_put returns for a bad offset. */
int nta_pool_frag_reserve(const struct nta_pool *p, uint64_t off);
/* One more holder of the page or fragment at off (-EOVERFLOW past 255). */
int nta_pool_get(struct nta_pool *p, uint64_t off);
/* One holder fewer. -EALREADY when nothing holds it (a put below zero). */
int nta_pool_put(struct nta_pool *p, uint64_t off, unsigned flags);
/* A put from another thread, posted to the owner; -EAGAIN: the queue is full (nothing posted). */
int nta_pool_put_remote(struct nta_pool *p, uint64_t off);
/* n puts from another thread, posted as one batch (one atomic operation): n, or -EAGAIN (the queue has
 * no room for all of them: nothing posted), or -EINVAL (n larger than the queue). */
long nta_pool_put_remote_bulk(struct nta_pool *p, const int64_t *offs, size_t n);
/* Apply the posted remote puts now (the owner). Returns how many were taken. */
long nta_pool_drain_remote(struct nta_pool *p);
/* Put n; returns 0 or the first failure, with *first_bad its index. */
long nta_pool_put_bulk(struct nta_pool *p, const int64_t *offs, size_t n, unsigned flags, size_t *first_bad);
int nta_pool_set_dtor(struct nta_pool *p, nta_pool_dtor_fn fn, void *ctx);
/* NTA_POOL_BATCH_DTOR: take up to n pages waiting for their destructor ... */
long nta_pool_dtor_take(struct nta_pool *p, int64_t *pages, size_t n);
/* ... and give each its verdict. */
int nta_pool_dtor_complete(struct nta_pool *p, const int64_t *pages, const int32_t *verdicts, size_t n);
int nta_pool_stats(const struct nta_pool *p, struct nta_pool_stats *st);
/* The counters as the pool keeps them, read in place by its owner's thread (no copy, nothing
 * published; inflight, cache_len and ring_len are filled in only by nta_pool_stats). */
const struct nta_pool_stats *nta_pool_counters(const struct nta_pool *p);
/* The pool's picture of pages [0, npages): one enum nta_cell per chunk (map
 * holds npages * chunks per page bytes): USED for live fragments and pages
 * handed out, FREE for free chunks of fragment pages, CACHED for pages in the
 * cache or ring (or pinned fragments), LARGE for combined blocks; pages not
 * the pool's as the arena sees them. Returns the cells written. */
long nta_pool_page_map(const struct nta_pool *p, uint8_t *map, size_t npages);
/* Prove the pool's pages, cache, ring, refcounts and counters agree. */
int nta_pool_check(const struct nta_pool *p, char *why, size_t whylen);

/* What a pool publishes in its arena for others to read (nta pool PATH). */
struct nta_pool_info {
	uint32_t pid, ifindex, queue; /* pid 0: no pool */
	uint32_t flags;               /* NTA_POOL_INFO_TORN, as nta_arena_pools read it */
	struct nta_pool_stats st;
};
#define NTA_POOL_INFO_TORN 0x1u /* the owner was writing it the whole time it was read: counters may disagree */
#define NTA_MAX_POOLS 8
/* The pools of an arena, as last published (on every nta_pool_stats, refill,
 * reap and destroy). A slot its owner is writing is read again, a bounded
 * number of times, then handed out marked NTA_POOL_INFO_TORN. Returns how
 * many were written to out. */
long nta_arena_pools(const struct nta_arena *a, struct nta_pool_info *out, size_t n);

/*
 * The zero-copy reader: another process maps the arena read-only and reads
 * fragments in place; what it pins is not freed (the free is deferred, see
 * nta_pool_reap) until it unpins, closes, or dies. Pin only what the owner
 * still holds: a pin on a block already freed fails with -ESTALE.
 */
struct nta_reader;
struct nta_reader *nta_reader_attach(const char *path); /* errno EUSERS: all reader slots taken */
void nta_reader_close(struct nta_reader *r);
const struct nta_arena *nta_reader_arena(const struct nta_reader *r);
int nta_reader_pin(struct nta_reader *r, uint64_t off);   /* -ESTALE, -ENOSPC (510 pins a reader) */
/* Pin n with one barrier (a pin costs a membarrier system call); res[i] as
 * nta_reader_pin would return. Returns how many were pinned. */
long nta_reader_pin_many(struct nta_reader *r, const uint64_t *offs, int *res, size_t n);
int nta_reader_unpin(struct nta_reader *r, uint64_t off); /* -ENOENT: not pinned */
/* Free what readers no longer pin, and reclaim the slots of readers that
 * died. Returns the blocks freed. Runs by itself on refill and destroy. */
long nta_pool_reap(struct nta_pool *p);

/* What names a process beside its pid, which the kernel reuses: its start
 * time (field 22 of /proc/PID/stat, clock ticks since boot), 0 when it is
 * gone or a zombie. Reader slots record it; so do the harness's topologies. */
uint64_t nta_proc_starttime(uint32_t pid);

#ifdef __cplusplus
}
#endif
#endif /* NTA_H */
