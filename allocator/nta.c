// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * nta.c - the Network Tree Allocator's small blocks, on a heap.
 *
 * A block of size bytes takes exactly ceil(size / chunk) chunks of one page.
 * Each page has three bitmaps: used chunks, the first chunk of every block
 * (start), and blocks parked in the size cache (cached). A maximal run of
 * free chunks is a free region; its first chunk holds a node linking it into
 * its heap's list for its length, and a bitmap of non-empty lists finds the
 * first region at or above a length without scanning. On free, the
 * neighbours are found from the used bitmap and combined in O(1), whatever
 * the number of free regions. A page whose chunks are all free goes back to
 * the heap's feeder (heap.c): pages.c, or the pool the heap belongs to (but
 * a pool's heap keeps its last page, so that a lone fragment allocated and
 * freed over and over does not take and give back a page each time).
 *
 * In front of that, a per-heap, per-size LIFO cache (cache_depth blocks per
 * length) takes freed blocks as they are and gives them out again before any
 * search or combining (nta_small.h); it is flushed when an allocation would
 * otherwise fail. A pool's heap does not let the cache keep a page: when
 * every block left on a page is parked, they are combined and the page goes
 * back to the pool (unless it is the heap's last); and it combines what its
 * cache holds before it takes another page.
 *
 * Every free is checked against the bitmaps before anything changes:
 * -EINVAL  the offset is not a chunk of a page in use
 * -EALREADY the block is already free (or parked in the cache)
 * -ENOENT  no live block starts at this offset
 * -ERANGE  the size does not match the block's size at this granularity
 */
#include <errno.h>
#include <string.h>

#include "nta_small.h"

/* -- free regions ------------------------------------------------------------ */

static void region_link(struct nta_arena *a, uint32_t h, uint32_t g, uint32_t n)
{
	struct nta_classes *L = &heap(a, h)->lists;
	struct nta_node *nd = node(a, g);

	nd->nchunks = n;
	nd->magic = NTA_NODE_MAGIC;
	nd->prev = 0;
	nd->next = L->heads[n];
	if (nd->next)
		node(a, nd->next)->prev = g;
	L->heads[n] = g;
	L->nonempty[n >> 6] |= 1ull << (n & 63);
}

static void region_unlink(struct nta_arena *a, uint32_t h, uint32_t g)
{
	struct nta_classes *L = &heap(a, h)->lists;
	struct nta_node *nd = node(a, g);
	uint32_t n = nd->nchunks;

	if (nd->prev)
		node(a, nd->prev)->next = nd->next;
	else
		L->heads[n] = nd->next;
	if (nd->next)
		node(a, nd->next)->prev = nd->prev;
	if (!L->heads[n])
		L->nonempty[n >> 6] &= ~(1ull << (n & 63));
	nd->magic = 0;
}

/* The first free region of at least n chunks in heap h, or 0. */
static inline uint32_t region_find(const struct nta_arena *a, uint32_t h, uint32_t n)
{
	const struct nta_classes *L = &a->heaps[h].lists;
	uint32_t cpp = a->cpp;

	for (uint32_t w = n >> 6; w <= cpp >> 6; w++) {
		uint64_t m = L->nonempty[w];
		if (w == n >> 6)
			m &= ~0ull << (n & 63);
		if (m)
			return L->heads[w * 64 + (uint32_t)__builtin_ctzll(m)];
	}
	return 0;
}

static inline void free_chunks_add(struct nta_arena *a, uint32_t h, int64_t n)
{
	a->heaps[h].free_chunks += (uint64_t)n;
	a->st->free_chunks += (uint64_t)n;
}

/* Take the first n chunks of free region g; the rest stays free. */
static int64_t carve(struct nta_arena *a, uint32_t h, uint32_t g, uint32_t n)
{
	uint32_t len = node(a, g)->nchunks;
	uint32_t p = gchunk_page(a, g), c = gchunk_index(a, g);
	struct nta_page *d = pg(a, p);
	struct nta_heap *hp = heap(a, h);

	region_unlink(a, h, g);
	if (len > n)
		region_link(a, h, g + n, len - n);
	range_set(bmp(a, p, BMP_USED), c, c + n);
	bit_set(bmp(a, p, BMP_START), c);
	d->nfree -= (uint16_t)n;
	d->live++;
	free_chunks_add(a, h, -(int64_t)n);
	hp->live++;
	hp->handed += (uint64_t)n << a->chunk_shift;
	return (int64_t)g << a->chunk_shift;
}

/* A new page of small blocks for heap h: one free region of every chunk. */
static uint32_t small_page_new(struct nta_arena *a, uint32_t h)
{
	int64_t p = nta_heap_page_get(a, h, PG_SMALL);

	if (p < 0)
		return 0;
	pg(a, (uint32_t)p)->nfree = (uint16_t)a->cpp;
	region_link(a, h, gchunk(a, (uint32_t)p, 0), a->cpp);
	free_chunks_add(a, h, a->cpp);
	return gchunk(a, (uint32_t)p, 0);
}

/* Free chunks [c, c + n) of page p for real: combine with free neighbours. A page left with nothing
 * goes back to the heap's feeder. */
static NTA_NOINLINE void release_chunks(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n)
{
	uint64_t *used = bmp(a, p, BMP_USED);
	struct nta_page *d = pg(a, p);
	uint32_t cpp = a->cpp, lo = c, hi = c + n;

	range_clear(used, c, c + n);
	bit_clear(bmp(a, p, BMP_START), c);
	d->nfree += (uint16_t)n;
	d->live--;
	heap(a, h)->live--;
	heap(a, h)->handed -= (uint64_t)n << a->chunk_shift;
	free_chunks_add(a, h, n);
	if (c > 0 && !bit_test(used, c - 1)) {
		lo = (uint32_t)(bit_prev_set(used, c) + 1);
		region_unlink(a, h, gchunk(a, p, lo));
	}
	if (hi < cpp && !bit_test(used, hi)) {
		uint32_t g = gchunk(a, p, hi);
		hi += node(a, g)->nchunks;
		region_unlink(a, h, g);
	}
	if (lo == 0 && hi == cpp && !nta_heap_keeps(a, h)) { /* the whole page is free */
		free_chunks_add(a, h, -(int64_t)cpp);
		nta_heap_page_put(a, h, p);
		return;
	}
	region_link(a, h, gchunk(a, p, lo), hi - lo);
}

/* -- the size cache ---------------------------------------------------------- */

/* Every block left on page p is parked: a pool's heap gives the page back rather than let the cache
 * keep it. The page goes whole: its parked blocks leave the cache and its free regions their lists, and
 * nothing is combined block by block (the page's next owner starts it afresh). */
static void evict_page(struct nta_arena *a, uint32_t h, uint32_t p)
{
	const uint64_t *used = bmp(a, p, BMP_USED);
	struct nta_heap *hp = heap(a, h);

	for (uint32_t c = 0; c < a->cpp;) {
		uint32_t g = gchunk(a, p, c);
		if (!bit_test(used, c)) { /* a free region: it ends where the used bits start again */
			region_unlink(a, h, g);
			c = bit_next_set(used, c, a->cpp);
			continue;
		}
		uint32_t e = nta_block_end(a, p, c), n = e - c;
		uint32_t *count = &hp->cache_count[n], *q = cache_at(a, h, n, 0);
		for (uint32_t i = 0; i < *count; i++, q++) /* the oldest first: a page dies in the order its blocks
							     * were parked */
			if (*q == g) {
				*q = *cache_at(a, h, n, --*count);
				hp->parked--;
				break;
			}
		hp->live--;
		hp->handed -= (uint64_t)n << a->chunk_shift;
		c = e;
	}
	free_chunks_add(a, h, -(int64_t)pg(a, p)->nfree);
	nta_heap_page_put(a, h, p);
}

void nta_small_flush(struct nta_arena *a, uint32_t h)
{
	struct nta_heap *hp = heap(a, h);

	for (uint32_t n = 1; n <= a->cpp && a->depth; n++) {
		while (hp->cache_count[n]) {
			uint32_t g = *cache_at(a, h, n, --hp->cache_count[n]);
			hp->parked--;
			uint32_t p = gchunk_page(a, g), c = gchunk_index(a, g);
			bit_clear(bmp(a, p, BMP_CACHED), c);
			if (heap_counts_parked(h))
				pg(a, p)->aux--;
			release_chunks(a, h, p, c, n);
		}
	}
}

/* Give back heap h's empty pages, the one a pool's heap keeps among them (they are its free regions
 * of a whole page). */
void nta_small_release_empty(struct nta_arena *a, uint32_t h)
{
	uint32_t g;

	while ((g = heap(a, h)->lists.heads[a->cpp])) {
		region_unlink(a, h, g);
		free_chunks_add(a, h, -(int64_t)a->cpp);
		nta_heap_page_put(a, h, gchunk_page(a, g));
	}
}

/* Does heap h's cache park anything? (A scan of the counts by length took 78 instructions an allocation
 * in producer-consumer, where a pool's heap grows with nothing parked.) */
static inline bool any_parked(const struct nta_arena *a, uint32_t h)
{
	return a->heaps[h].parked != 0;
}

bool nta_small_idle(const struct nta_arena *a, uint32_t h)
{
	return any_parked(a, h) || a->heaps[h].lists.heads[a->cpp];
}

/* -- checking a small free ------------------------------------------------------ */

/* Is [c, c + n) of page p exactly one live block? 0 or a negative errno. */
NTA_NOINLINE int nta_check_small_free(const struct nta_arena *a, uint32_t p, uint32_t c, uint32_t n)
{
	const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START);
	uint32_t cpp = a->cpp, w = c >> 6, b = c & 63;

	if (unlikely(!bit_test(used, c) || bit_test(bmp(a, p, BMP_CACHED), c)))
		return -EALREADY;
	if (unlikely(!bit_test(start, c)))
		return -ENOENT;
	if (unlikely(n == 0 || c + n > cpp))
		return -ERANGE;
	if (likely(b + n <= 64)) { /* the block lies in one word: the common case */
		uint64_t m = (n == 64 ? ~0ull : (1ull << n) - 1) << b;
		if (unlikely((used[w] & m) != m || (start[w] & m) != (1ull << b)))
			return -ERANGE;
	} else if (unlikely(!range_all(used, c, c + n) || range_any(start, c + 1, c + n))) {
		return -ERANGE;
	}
	if (c + n < cpp && bit_test(used, c + n) && !bit_test(start, c + n))
		return -ERANGE; /* the block goes on past n chunks */
	return 0;
}

/* -- allocation and free -------------------------------------------------------- */

/* A block of n chunks from heap h's free regions (a caller that found its cache empty comes here
 * straight: the cache's slot was read already). */
NTA_NOINLINE int64_t nta_small_alloc_regions(struct nta_arena *a, uint32_t h, uint32_t n)
{
	uint32_t g = region_find(a, h, n);

	if (!g && a->feed[h].put && any_parked(a, h)) { /* a pool's heap combines what it parks before it grows */
		nta_small_flush(a, h);
		g = region_find(a, h, n);
	}
	if (!g)
		g = small_page_new(a, h);
	if (!g && any_parked(a, h)) { /* combining what the cache holds may make room */
		nta_small_flush(a, h);
		g = region_find(a, h, n);
	}
	return g ? carve(a, h, g, n) : -ENOMEM;
}

/* Split the live block at chunk c of page p into two live blocks, [c, c + k) and [c + k, end): its
 * length, or 0 when k is not inside it (nothing changed). The caller frees one of them for real. */
static uint32_t split_block(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t k)
{
	const uint32_t n = nta_block_end(a, p, c) - c;

	if (k >= n || k == 0)
		return 0;
	bit_set(bmp(a, p, BMP_START), c + k);
	pg(a, p)->live++;
	heap(a, h)->live++;
	return n;
}

/* Cut the live block at chunk c of page p down to m chunks: its tail is freed for real (combined with
 * what follows it). Returns the chunks given back. */
uint32_t nta_small_trim(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t m)
{
	const uint32_t n = split_block(a, h, p, c, m);

	if (n)
		release_chunks(a, h, p, c + m, n - m);
	return n ? n - m : 0;
}

/* Cut the first k chunks off the live block at chunk c of page p: they are freed for real (combined with
 * what precedes them), and the block starts at c + k. Returns the chunks given back (0: k is not less
 * than the block's length, and nothing changed). */
uint32_t nta_small_cut_head(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t k)
{
	if (!split_block(a, h, p, c, k))
		return 0;
	release_chunks(a, h, p, c, k);
	return k;
}

/* The slow free: a bad one gets its exact errno; a good one that the cache does not take is combined. */
NTA_NOINLINE int nta_small_free(struct nta_arena *a, uint32_t h, uint32_t p, uint32_t c, uint32_t n)
{
	struct nta_page *d = pg(a, p);
	int err = nta_check_small_free(a, p, c, n);

	if (err)
		return err;
	if (nta_small_park_live(a, h, p, c, n))
		return 0;
	bool last = d->live == 1;
	release_chunks(a, h, p, c, n);
	if (!last && a->feed[h].put && d->live && d->aux == d->live && !nta_heap_keeps(a, h))
		evict_page(a, h, p);
	return 0;
}
