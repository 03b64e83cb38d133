// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * nta.c - the Network Tree Allocator: exact-size blocks of chunks.
 *
 * A block of size bytes takes exactly ceil(size / chunk) chunks of one page.
 * Each page has three bitmaps: used chunks, the first chunk of every block
 * (start), and blocks parked in the size cache (cached). A maximal run of
 * free chunks is a free region; its first chunk holds a node linking it into
 * the list for its length, and a bitmap of non-empty lists finds the first
 * region at or above a length without scanning. On free, the neighbours are
 * found from the used bitmap and combined in O(1), whatever the number of
 * free regions. A page whose chunks are all free goes back to pages.c.
 *
 * In front of that, a per-size LIFO cache (cache_depth blocks per length)
 * takes freed blocks as they are and gives them out again before any search
 * or combining; it is flushed when an allocation would otherwise fail.
 *
 * Every free is checked against the bitmaps before anything changes:
 * -EINVAL  the offset is not a chunk of a page in use
 * -EALREADY the block is already free (or parked in the cache)
 * -ENOENT  no live block starts at this offset
 * -ERANGE  the size does not match the block's size at this granularity
 */
#include <errno.h>
#include <string.h>

#include "nta_internal.h"

/* -- accounting ------------------------------------------------------------
 * live blocks = allocs - frees and cached blocks = the sum of cache_count are
 * derived when read (stats.c), not counted on the fast paths.
 */

static inline void account_alloc(struct nta_stats *st, size_t size, uint64_t handed)
{
	uint64_t req = st->bytes_requested + size, got = st->bytes_handed + handed;

	st->allocs++;
	st->bytes_requested = req;
	st->bytes_handed = got;
	if (req > st->peak_bytes_requested)
		st->peak_bytes_requested = req;
	if (got > st->peak_bytes_handed)
		st->peak_bytes_handed = got;
}

static inline void account_free(struct nta_stats *st, size_t size, uint64_t handed)
{
	st->frees++;
	st->bytes_requested -= size;
	st->bytes_handed -= handed;
}

void nta_account_alloc(struct nta_arena *a, size_t size, uint64_t handed)
{
	account_alloc(a->st, size, handed);
}

void nta_account_free(struct nta_arena *a, size_t size, uint64_t handed)
{
	account_free(a->st, size, handed);
}

static uint64_t cached_total(const struct nta_arena *a)
{
	uint64_t t = 0;

	for (uint32_t n = 1; n <= a->cpp && a->depth; n++)
		t += a->cache_count[n];
	return t;
}

static inline uint32_t chunks_for(const struct nta_arena *a, size_t size)
{
	return (uint32_t)((size + a->h->chunk_size - 1) >> a->h->chunk_shift);
}

/* -- free regions ------------------------------------------------------------ */

static void region_link(struct nta_arena *a, int pool, uint32_t g, uint32_t n)
{
	struct nta_classes *P = &a->h->pool[pool];
	struct nta_node *nd = node(a, g);

	nd->nchunks = n;
	nd->magic = NTA_NODE_MAGIC;
	nd->prev = 0;
	nd->next = P->heads[n];
	if (nd->next)
		node(a, nd->next)->prev = g;
	P->heads[n] = g;
	P->nonempty[n >> 6] |= 1ull << (n & 63);
}

static void region_unlink(struct nta_arena *a, int pool, uint32_t g)
{
	struct nta_classes *P = &a->h->pool[pool];
	struct nta_node *nd = node(a, g);
	uint32_t n = nd->nchunks;

	if (nd->prev)
		node(a, nd->prev)->next = nd->next;
	else
		P->heads[n] = nd->next;
	if (nd->next)
		node(a, nd->next)->prev = nd->prev;
	if (!P->heads[n])
		P->nonempty[n >> 6] &= ~(1ull << (n & 63));
	nd->magic = 0;
}

/* The first free region of at least n chunks in pool, or 0. */
static inline uint32_t region_find(const struct nta_arena *a, int pool, uint32_t n)
{
	const struct nta_classes *P = &a->h->pool[pool];
	uint32_t cpp = a->h->cpp;

	for (uint32_t w = n >> 6; w <= cpp >> 6; w++) {
		uint64_t m = P->nonempty[w];
		if (w == n >> 6)
			m &= ~0ull << (n & 63);
		if (m)
			return P->heads[w * 64 + (uint32_t)__builtin_ctzll(m)];
	}
	return 0;
}

/* Take the first n chunks of free region g (length len); the rest stays free. */
static int64_t carve(struct nta_arena *a, int pool, uint32_t g, uint32_t n)
{
	uint32_t len = node(a, g)->nchunks;
	uint32_t p = gchunk_page(a, g), c = gchunk_index(a, g);
	struct nta_page *d = pg(a, p);

	region_unlink(a, pool, g);
	if (len > n)
		region_link(a, pool, g + n, len - n);
	range_set(bmp(a, p, BMP_USED), c, c + n);
	bit_set(bmp(a, p, BMP_START), c);
	d->nfree -= (uint16_t)n;
	d->live++;
	a->h->st.free_chunks -= n;
	return (int64_t)g << a->h->chunk_shift;
}

/* A new page of small blocks: one free region of every chunk. */
static uint32_t small_page_new(struct nta_arena *a, int pool)
{
	int64_t p = nta_pages_get(a, 1, pool == 1);

	if (p < 0)
		return 0;
	struct nta_page *d = pg(a, (uint32_t)p);
	d->kind = PG_SMALL;
	d->nfree = (uint16_t)a->h->cpp;
	memset(bmp(a, (uint32_t)p, BMP_USED), 0, 3 * a->h->words * sizeof(uint64_t));
	region_link(a, pool, gchunk(a, (uint32_t)p, 0), a->h->cpp);
	a->h->st.small_pages++;
	a->h->st.free_chunks += a->h->cpp;
	return gchunk(a, (uint32_t)p, 0);
}

/* Free chunks [c, c + n) of page p for real: combine with free neighbours. */
static NTA_NOINLINE void release_chunks(struct nta_arena *a, uint32_t p, uint32_t c, uint32_t n)
{
	uint64_t *used = bmp(a, p, BMP_USED);
	struct nta_page *d = pg(a, p);
	int pool = (d->flags & PG_RESERVE) ? 1 : 0;
	uint32_t cpp = a->h->cpp, lo = c, hi = c + n;

	range_clear(used, c, c + n);
	bit_clear(bmp(a, p, BMP_START), c);
	d->nfree += (uint16_t)n;
	d->live--;
	a->h->st.free_chunks += n;
	if (c > 0 && !bit_test(used, c - 1)) {
		lo = (uint32_t)(bit_prev_set(used, c) + 1);
		region_unlink(a, pool, gchunk(a, p, lo));
	}
	if (hi < cpp && !bit_test(used, hi)) {
		uint32_t g = gchunk(a, p, hi);
		hi += node(a, g)->nchunks;
		region_unlink(a, pool, g);
	}
	if (lo == 0 && hi == cpp) { /* the whole page is free: back to pages.c */
		a->h->st.small_pages--;
		a->h->st.free_chunks -= cpp;
		nta_pages_put(a, p, 1);
		return;
	}
	region_link(a, pool, gchunk(a, p, lo), hi - lo);
}

/* -- the size cache ---------------------------------------------------------- */

NTA_API int nta_cache_flush(struct nta_arena *a)
{
	struct nta_hdr *h = a->h;

	if (!a->writable)
		return -EROFS;
	for (uint32_t n = 1; n <= h->cpp && h->cache_depth; n++) {
		while (h->cache_count[n]) {
			uint32_t g = cache_slot(a, n)[--h->cache_count[n]];
			uint32_t p = gchunk_page(a, g), c = gchunk_index(a, g);
			bit_clear(bmp(a, p, BMP_CACHED), c);
			release_chunks(a, p, c, n);
		}
	}
	h->st.cache_flushes++;
	return 0;
}

/* -- checking a small free ------------------------------------------------------ */

/* Is [c, c + n) of page p exactly one live block? 0 or a negative errno. */
NTA_NOINLINE int nta_check_small_free(const struct nta_arena *a, uint32_t p, uint32_t c, uint32_t n)
{
	const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START);
	uint32_t cpp = a->h->cpp, w = c >> 6, b = c & 63;

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

/* -- large blocks: runs of whole pages ------------------------------------------ */

int64_t nta_large_alloc(struct nta_arena *a, uint32_t npages, size_t size, unsigned flags)
{
	struct nta_hdr *h = a->h;
	bool reserve = false;
	int64_t p = nta_pages_get(a, npages, false);

	if (p < 0 && (flags & NTA_F_RESERVE)) {
		p = nta_pages_get(a, npages, true);
		reserve = true;
	}
	if (p < 0) {
		if (!(flags & NTA_F_RESERVE) && nta_pages_budget(a, true) >= npages)
			h->st.reserve_denied++;
		return p;
	}
	pg(a, (uint32_t)p)->kind = PG_LARGE;
	pg(a, (uint32_t)p)->run = npages;
	for (uint32_t i = 1; i < npages; i++)
		pg(a, (uint32_t)p + i)->kind = PG_LARGE_TAIL;
	h->st.large_pages += npages;
	if (reserve)
		h->st.reserve_allocs++;
	nta_account_alloc(a, size, (uint64_t)npages << h->page_shift);
	return (int64_t)page_off(a, (uint32_t)p);
}

int nta_large_free(struct nta_arena *a, uint32_t p, size_t size, uint32_t npages)
{
	struct nta_page *d = pg(a, p);

	if (d->run != npages)
		return -ERANGE;
	a->h->st.large_pages -= npages;
	nta_account_free(a, size, (uint64_t)npages << a->h->page_shift);
	nta_pages_put(a, p, npages);
	return 0;
}

/* -- the NTA ------------------------------------------------------------------ */

static int64_t small_alloc_pool(struct nta_arena *a, int pool, uint32_t n)
{
	uint32_t g = region_find(a, pool, n);

	if (!g)
		g = small_page_new(a, pool);
	return g ? carve(a, pool, g, n) : -ENOMEM;
}

static NTA_NOINLINE int64_t small_alloc_slow(struct nta_arena *a, uint32_t n, unsigned flags)
{
	struct nta_hdr *h = a->h;
	int64_t off = small_alloc_pool(a, 0, n);

	if (off < 0 && cached_total(a)) { /* combining what the cache holds may make room */
		nta_cache_flush(a);
		off = small_alloc_pool(a, 0, n);
	}
	if (off < 0 && (flags & NTA_F_RESERVE)) {
		off = small_alloc_pool(a, 1, n);
		if (off > 0)
			h->st.reserve_allocs++;
	} else if (off < 0 && (region_find(a, 1, n) || nta_pages_budget(a, true) > 0)) {
		h->st.reserve_denied++;
	}
	return off;
}

/* -- the public calls --------------------------------------------------------- */

NTA_API uint64_t nta_alloc_size(const struct nta_arena *a, size_t size)
{
	uint64_t pages;

	if (size == 0 || size > ((uint64_t)a->h->max_pages << a->page_shift))
		return 0;
	if (size <= a->page_size)
		return a->kind == NTA_KIND_POW2 ? 1ull << nta_pow2_class(a, size)
						: (uint64_t)chunks_for(a, size) << a->chunk_shift;
	pages = (size + a->page_size - 1) >> a->page_shift;
	if (a->kind == NTA_KIND_POW2)
		pages = 1ull << (64 - __builtin_clzll(pages - 1));
	return pages <= a->h->max_pages ? pages << a->page_shift : 0;
}

/*
 * The fast paths below (an allocation the size cache can serve, a free of a
 * small block) load the geometry into locals once: every store to a bitmap
 * could alias the header's 64-bit fields, and reloading them after each
 * store cost more than the work itself.
 */

NTA_API int64_t nta_alloc(struct nta_arena *a, size_t size, unsigned flags)
{
	int64_t off;

	if (unlikely(!a->writable))
		return -EROFS;
	if (likely(a->kind == NTA_KIND_NTA && size - 1 < a->page_size)) {
		const uint32_t cs = a->chunk_shift;
		const uint32_t n = (uint32_t)((size + a->chunk_mask) >> cs);
		uint32_t *count = a->cache_count + n;
		const uint32_t cnt = *count;
		if (likely(cnt)) { /* a block of exactly this length, freed a moment ago */
			const uint32_t g = a->cache[(size_t)n * a->depth + cnt - 1];
			const uint32_t p = (g >> (a->page_shift - cs)) - a->gpage0, c = g & (a->cpp - 1);
			uint64_t *cached = a->bmp + ((size_t)p * 3 + BMP_CACHED) * a->words;
			*count = cnt - 1;
			cached[c >> 6] &= ~(1ull << (c & 63));
			a->st->cache_hits++;
			account_alloc(a->st, size, (uint64_t)n << cs);
			return (int64_t)((uint64_t)g << cs);
		}
		off = small_alloc_slow(a, n, flags);
		if (off > 0)
			account_alloc(a->st, size, (uint64_t)n << cs);
		else
			a->st->alloc_fails++;
		return off;
	}
	struct nta_hdr *h = a->h;
	if (unlikely(size == 0 || size > ((uint64_t)h->max_pages << h->page_shift))) {
		h->st.alloc_fails++;
		return size ? -ENOMEM : -EINVAL;
	}
	if (h->kind == NTA_KIND_POW2)
		off = nta_pow2_alloc(a, size, flags);
	else
		off = nta_large_alloc(a, (uint32_t)((size + a->page_size - 1) >> a->page_shift), size, flags);
	if (off < 0)
		h->st.alloc_fails++;
	return off;
}

/*
 * A small NTA block: check it, then park it in the cache or combine it.
 *
 * The check leans on an invariant nta_check() proves: used chunks are cut
 * into blocks by start bits. So a start bit at c that is not cached is a
 * live block, and it ends at the first chunk after c that is a start or
 * free (a set bit of start | ~used): one count-trailing-zeros instead of
 * range masks. Anything unusual goes to nta_check_small_free(), which also
 * works out the exact errno.
 */
static inline int small_free(struct nta_arena *a, uint32_t p, uint64_t off, size_t size)
{
	const uint32_t cs = a->chunk_shift, cpp = a->cpp, words = a->words;
	const uint32_t c = (uint32_t)(off >> cs) & (cpp - 1), w = c >> 6, b = c & 63;
	const uint32_t n = (uint32_t)((size + a->chunk_mask) >> cs);
	uint64_t *used = a->bmp + (size_t)p * 3 * words, *start = used + words, *cached = start + words;
	const uint64_t bit = 1ull << b, s = start[w];
	uint32_t end;

	if (unlikely(!(s & bit) || (cached[w] & bit)))
		goto slow;
	uint64_t x = (s | ~used[w]) & ((~0ull << b) << 1); /* block ends strictly above c */
	if (likely(x)) {
		end = (w << 6) + (uint32_t)__builtin_ctzll(x);
	} else if (w + 1 >= words) {
		end = cpp;
	} else {
		x = start[w + 1] | ~used[w + 1];
		end = x ? ((w + 1) << 6) + (uint32_t)__builtin_ctzll(x) : UINT32_MAX;
	}
	if (unlikely(end != c + n)) { /* or the block goes on past the next word */
		int err;
slow:
		err = nta_check_small_free(a, p, c, n);
		if (err)
			return err;
	}
	account_free(a->st, size, (uint64_t)n << cs);
	uint32_t *count = a->cache_count + n;
	const uint32_t cnt = *count;
	if (likely(cnt < a->depth && !(a->desc[p].flags & PG_RESERVE))) {
		a->cache[(size_t)n * a->depth + cnt] = (uint32_t)(off >> cs);
		*count = cnt + 1;
		cached[w] |= bit;
		return 0;
	}
	release_chunks(a, p, c, n);
	return 0;
}

NTA_API int nta_free(struct nta_arena *a, uint64_t off, size_t size)
{
	struct nta_hdr *h = a->h;
	const uint64_t data_off = (uint64_t)a->gpage0 << a->page_shift;
	const uint32_t ps = a->page_shift;
	int err;

	if (unlikely(!a->writable))
		return -EROFS;
	if (unlikely(off < data_off || off >= data_off + ((uint64_t)h->top << ps) || (off & a->chunk_mask) ||
		     size == 0)) {
		err = -EINVAL;
		goto bad;
	}
	uint32_t p = (uint32_t)((off - data_off) >> ps);
	if (unlikely(a->kind == NTA_KIND_POW2)) {
		err = nta_pow2_free(a, off, size);
		goto out;
	}
	switch (a->desc[p].kind) {
	case PG_SMALL:
		if (likely(size <= a->page_size))
			err = small_free(a, p, off, size);
		else /* too big for a small block, but say "already free" or "not a block" first */
			err = nta_check_small_free(a, p, (uint32_t)(off >> a->chunk_shift) & (a->cpp - 1), 0);
		break;
	case PG_LARGE:
		if (off != page_off(a, p))
			err = -ENOENT;
		else if (size <= a->page_size)
			err = -ERANGE;
		else
			err = nta_large_free(a, p, size, (uint32_t)((size + a->page_size - 1) >> ps));
		break;
	case PG_FREE:
		err = -EALREADY;
		break;
	default:
		err = -ENOENT;
	}
out:
	if (likely(!err))
		return 0;
bad:
	a->st->bad_frees++;
	return err;
}

NTA_API long nta_alloc_bulk(struct nta_arena *a, const uint32_t *sizes, int64_t *offs, size_t n,
			    unsigned flags)
{
	long ok = 0;

	if (!a->writable)
		return -EROFS;
	for (size_t i = 0; i < n; i++) {
		int64_t off = nta_alloc(a, sizes[i], flags);
		offs[i] = off > 0 ? off : 0;
		ok += off > 0;
	}
	return ok;
}

NTA_API long nta_free_bulk(struct nta_arena *a, const int64_t *offs, const uint32_t *sizes, size_t n,
			   size_t *first_bad)
{
	long first = 0;

	if (!a->writable)
		return -EROFS;
	for (size_t i = 0; i < n; i++) {
		int err = offs[i] > 0 ? nta_free(a, (uint64_t)offs[i], sizes[i]) : -EINVAL;
		if (err && !first) {
			first = err;
			if (first_bad)
				*first_bad = i;
		}
	}
	return first;
}
