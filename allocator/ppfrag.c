// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ppfrag.c - the kernel's page_pool_alloc_frag() shape, on a heap, for
 * comparison: fragments are carved in order from the heap's current page;
 * one that does not fit in what is left starts a new current page, unless
 * every fragment of the old one is already gone, in which case it starts
 * again at its beginning (page_pool_drain_frag). Nothing freed is reused
 * while a page still holds a fragment; the page goes back to the heap's
 * feeder with its last one (the current page stays current, but in a
 * reserve heap, which keeps nothing idle).
 *
 * Sizes are rounded to chunks (the kernel aligns to dma_get_cache_alignment(),
 * 1 byte on x86). The bitmaps are the NTA's, so frees are checked the same
 * way; a carved page's free chunks are not linked anywhere.
 */
#include "nta_internal.h"

static void free_chunks_add(struct nta_arena *a, uint32_t h, int64_t n)
{
	a->heaps[h].free_chunks += (uint64_t)n;
	a->st->free_chunks += (uint64_t)n;
}

int64_t nta_ppfrag_alloc(struct nta_arena *a, uint32_t h, uint32_t n)
{
	struct nta_heap *hp = heap(a, h);
	uint32_t p, c;

	if (hp->cur && hp->cursor + n > a->cpp) {
		if (pg(a, hp->cur - 1)->live == 0)
			hp->cursor = 0; /* nothing left on it: carve it again from the start */
		else
			hp->cur = 0;    /* it goes back with its last fragment */
	}
	if (!hp->cur) {
		int64_t np = nta_heap_page_get(a, h, PG_CARVE);
		if (np < 0)
			return np;
		pg(a, (uint32_t)np)->nfree = (uint16_t)a->cpp;
		free_chunks_add(a, h, a->cpp);
		hp->cur = (uint32_t)np + 1;
		hp->cursor = 0;
	}
	p = hp->cur - 1;
	c = hp->cursor;
	struct nta_page *d = pg(a, p);
	range_set(bmp(a, p, BMP_USED), c, c + n);
	bit_set(bmp(a, p, BMP_START), c);
	d->nfree -= (uint16_t)n;
	d->live++;
	hp->cursor = c + n;
	free_chunks_add(a, h, -(int64_t)n);
	hp->live++;
	hp->handed += (uint64_t)n << a->chunk_shift;
	return (int64_t)page_off(a, p) + ((int64_t)c << a->chunk_shift);
}

int nta_ppfrag_free(struct nta_arena *a, uint32_t p, uint32_t c, uint32_t n)
{
	struct nta_page *d = pg(a, p);
	uint32_t h = d->heap;
	struct nta_heap *hp = heap(a, h);
	int err = nta_check_small_free(a, p, c, n);

	if (err)
		return err;
	range_clear(bmp(a, p, BMP_USED), c, c + n);
	bit_clear(bmp(a, p, BMP_START), c);
	d->nfree += (uint16_t)n;
	d->live--;
	free_chunks_add(a, h, n);
	hp->live--;
	hp->handed -= (uint64_t)n << a->chunk_shift;
	if (!d->live && (hp->cur != p + 1 || !nta_heap_keeps_idle(a, h))) { /* a reserve heap keeps no current page */
		if (hp->cur == p + 1)
			hp->cur = 0;
		free_chunks_add(a, h, -(int64_t)a->cpp);
		nta_heap_page_put(a, h, p);
	}
	return 0;
}

void nta_ppfrag_drop(struct nta_arena *a, uint32_t h)
{
	struct nta_heap *hp = heap(a, h);
	uint32_t p = hp->cur - 1;

	if (!hp->cur)
		return;
	hp->cur = 0;
	if (!pg(a, p)->live) {
		free_chunks_add(a, h, -(int64_t)a->cpp);
		nta_heap_page_put(a, h, p);
	}
}
