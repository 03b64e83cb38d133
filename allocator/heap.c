// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * heap.c - the heaps of an arena: where a heap's pages come from and go
 * back to, and its blocks whatever its kind (nta.c, pow2.c, ppfrag.c).
 *
 * A heap takes a page when it has no room, from its feeder (a pool hands it
 * pages of its cache, its ring or fresh from the arena) or, for the arena's
 * own heaps, from pages.c; it gives back a page the moment it holds nothing.
 * A page belongs to one heap at a time, named in its descriptor.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "nta_small.h"

int64_t nta_heap_page_get(struct nta_arena *a, uint32_t h, uint8_t kind)
{
	struct nta_heap *hp = heap(a, h);
	const struct nta_feed *f = &a->feed[h];
	bool reserve = hp->flags & HEAP_RESERVE;
	int64_t p = f->get ? f->get(f->ctx, reserve) : nta_pages_get(a, 1, reserve);

	if (p < 0)
		return p;
	struct nta_page *d = pg(a, (uint32_t)p);
	d->kind = kind;
	d->heap = (uint8_t)h;
	d->live = 0;
	d->nfree = 0;
	d->aux = 0;
	d->next = d->prev = 0;
	memset(bmp(a, (uint32_t)p, BMP_USED), 0, 3 * a->words * sizeof(uint64_t));
	if (++hp->pages > hp->peak_pages)
		hp->peak_pages = hp->pages;
	a->st->small_pages++;
	return p;
}

void nta_heap_page_put(struct nta_arena *a, uint32_t h, uint32_t p)
{
	const struct nta_feed *f = &a->feed[h];

	heap(a, h)->pages--;
	a->st->small_pages--;
	if (f->put) { /* still the pool's, whole again */
		pg(a, p)->kind = PG_POOL;
		f->put(f->ctx, p);
	} else {
		nta_pages_put(a, p, 1);
	}
}

int nta_heap_open(struct nta_arena *a, uint32_t h, uint32_t kind, uint32_t flags, const struct nta_feed *feed)
{
	struct nta_heap *hp = heap(a, h);

	if (h < 2 || h >= NTA_MAX_HEAPS || hp->kind != HEAP_NONE)
		return -EBUSY;
	if (kind != HEAP_NTA && kind != HEAP_SLAB && kind != HEAP_PPFRAG && kind != HEAP_WHOLE)
		return -EINVAL;
	memset(hp, 0, sizeof(*hp));
	hp->kind = kind;
	hp->flags = flags;
	hp->cache_limit = kind == HEAP_NTA && !(flags & HEAP_RESERVE) ? a->depth : 0;
	hp->owner = (uint32_t)getpid();
	a->feed[h] = *feed;
	return 0;
}

long nta_heap_drain(struct nta_arena *a, uint32_t h)
{
	struct nta_heap *hp = heap(a, h);

	if (hp->kind == HEAP_NTA) {
		nta_small_flush(a, h);
		nta_small_release_empty(a, h);
	} else if (hp->kind == HEAP_SLAB) {
		nta_slab_release_empty(a, h);
	} else if (hp->kind == HEAP_PPFRAG) {
		nta_ppfrag_drop(a, h);
	}
	return hp->pages;
}

bool nta_heap_idle(const struct nta_arena *a, uint32_t h)
{
	const struct nta_heap *hp = &a->heaps[h];

	switch (hp->kind) {
	case HEAP_NTA:
		return nta_small_idle(a, h);
	case HEAP_SLAB:
		return nta_slab_idle(a, h);
	case HEAP_PPFRAG:
		return hp->cur && !a->desc[hp->cur - 1].live;
	default:
		return false;
	}
}

int nta_heap_close(struct nta_arena *a, uint32_t h)
{
	struct nta_heap *hp = heap(a, h);

	if (hp->pages || hp->cur)
		return -EBUSY;
	memset(hp, 0, sizeof(*hp));
	memset(&a->feed[h], 0, sizeof(a->feed[h]));
	return 0;
}

int64_t nta_heap_alloc(struct nta_arena *a, uint32_t h, size_t size)
{
	const uint32_t n = (uint32_t)((size + a->chunk_mask) >> a->chunk_shift);

	switch (a->heaps[h].kind) {
	case HEAP_NTA: {
		int64_t off = nta_small_cache_pop(a, h, n);
		return off ? off : nta_small_alloc_regions(a, h, n);
	}
	case HEAP_SLAB:
		return nta_slab_alloc(a, h, size);
	case HEAP_PPFRAG:
		return nta_ppfrag_alloc(a, h, n);
	default:
		return -EINVAL;
	}
}

int nta_heap_block_at(const struct nta_arena *a, uint32_t p, uint32_t c)
{
	const struct nta_page *d = pg(a, p);

	if (d->kind != PG_SMALL && d->kind != PG_SLAB && d->kind != PG_CARVE)
		return -ENOENT;
	if (!bit_test(bmp(a, p, BMP_USED), c) || bit_test(bmp(a, p, BMP_CACHED), c))
		return -EALREADY;
	return bit_test(bmp(a, p, BMP_START), c) ? 0 : -ENOENT;
}

int nta_heap_free_block(struct nta_arena *a, uint32_t h, uint64_t off, uint64_t *handed)
{
	const uint64_t data_off = (uint64_t)a->gpage0 << a->page_shift;
	const uint32_t p = (uint32_t)((off - data_off) >> a->page_shift);
	const uint32_t c = (uint32_t)(off >> a->chunk_shift) & (a->cpp - 1);
	const struct nta_page *d = a->desc + p;
	uint32_t n;
	int err;

	if (unlikely(d->heap != h))
		return -ENOENT;
	switch (d->kind) {
	case PG_SMALL:
		n = nta_block_end(a, p, c) - c;
		err = nta_small_free_fast(a, h, p, c, n);
		break;
	case PG_SLAB:
		n = 1u << (d->cls - a->chunk_shift);
		err = nta_slab_free(a, p, off, (size_t)1 << d->cls);
		break;
	case PG_CARVE:
		n = nta_block_end(a, p, c) - c;
		err = nta_ppfrag_free(a, p, c, n);
		break;
	default:
		return -ENOENT;
	}
	if (!err && handed)
		*handed = (uint64_t)n << a->chunk_shift;
	return err;
}
