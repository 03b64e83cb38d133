// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pow2.c - the baseline the NTA is measured against: a SLAB-like allocator
 * with one size class per power of two (kmalloc's shape). A page holds
 * objects of one class, threaded on an in-page free list; a class keeps a
 * list of its partial pages. Blocks larger than a page take a power-of-two
 * number of pages, as kmalloc_large does with page orders.
 *
 * It marks the same per-page bitmaps as the NTA (an object is used from its
 * first to its last chunk), so nta_check() and the page map work for both,
 * and frees are checked the same way.
 */
#include <errno.h>

#include "nta_internal.h"

uint32_t nta_pow2_class(const struct nta_arena *a, size_t size)
{
	uint32_t k = size <= 1 ? 0 : 64u - (uint32_t)__builtin_clzll((uint64_t)size - 1);
	return k < a->h->chunk_shift ? a->h->chunk_shift : k;
}

static uint32_t *obj_next(const struct nta_arena *a, uint32_t p, uint32_t i, uint32_t k)
{
	return (uint32_t *)(a->base + page_off(a, p) + ((uint64_t)i << k));
}

static void slab_link(struct nta_arena *a, int pool, uint32_t p)
{
	struct nta_classes *P = &a->h->pool[pool];
	struct nta_page *d = pg(a, p);
	uint32_t ci = d->cls - a->h->chunk_shift;

	d->prev = 0;
	d->next = P->slabs[ci];
	if (d->next)
		pg(a, d->next - 1)->prev = p + 1;
	P->slabs[ci] = p + 1;
}

static void slab_unlink(struct nta_arena *a, int pool, uint32_t p)
{
	struct nta_classes *P = &a->h->pool[pool];
	struct nta_page *d = pg(a, p);

	if (d->prev)
		pg(a, d->prev - 1)->next = d->next;
	else
		P->slabs[d->cls - a->h->chunk_shift] = d->next;
	if (d->next)
		pg(a, d->next - 1)->prev = d->prev;
	d->next = d->prev = 0;
}

static int64_t slab_new(struct nta_arena *a, int pool, uint32_t k)
{
	int64_t p = nta_pages_get(a, 1, pool == 1);

	if (p < 0)
		return p;
	struct nta_page *d = pg(a, (uint32_t)p);
	uint32_t objs = a->h->page_size >> k;
	d->kind = PG_SLAB;
	d->cls = (uint8_t)k;
	d->nfree = (uint16_t)objs;
	for (uint32_t i = 0; i < objs; i++)
		*obj_next(a, (uint32_t)p, i, k) = i + 1 < objs ? i + 2 : 0;
	d->aux = 1;
	for (int w = 0; w < 3; w++)
		for (uint32_t i = 0; i < a->h->words; i++)
			bmp(a, (uint32_t)p, w)[i] = 0;
	slab_link(a, pool, (uint32_t)p);
	a->h->st.small_pages++;
	return p;
}

static int64_t pool_alloc(struct nta_arena *a, int pool, uint32_t k)
{
	struct nta_classes *P = &a->h->pool[pool];
	uint32_t head = P->slabs[k - a->h->chunk_shift];
	int64_t p = head ? (int64_t)head - 1 : slab_new(a, pool, k);

	if (p < 0)
		return p;
	struct nta_page *d = pg(a, (uint32_t)p);
	uint32_t i = d->aux - 1, per = 1u << (k - a->h->chunk_shift);
	d->aux = *obj_next(a, (uint32_t)p, i, k);
	d->nfree--;
	d->live++;
	if (!d->nfree)
		slab_unlink(a, pool, (uint32_t)p);
	range_set(bmp(a, (uint32_t)p, BMP_USED), i * per, (i + 1) * per);
	bit_set(bmp(a, (uint32_t)p, BMP_START), i * per);
	return (int64_t)page_off(a, (uint32_t)p) + ((int64_t)i << k);
}

int64_t nta_pow2_alloc(struct nta_arena *a, size_t size, unsigned flags)
{
	struct nta_hdr *h = a->h;
	int64_t off;

	if (size > h->page_size) {
		uint64_t np = (size + h->page_size - 1) >> h->page_shift, po2 = 1;
		while (po2 < np)
			po2 <<= 1;
		if (po2 > h->max_pages)
			return -ENOMEM;
		return nta_large_alloc(a, (uint32_t)po2, size, flags);
	}
	uint32_t k = nta_pow2_class(a, size);
	off = pool_alloc(a, 0, k);
	if (off < 0 && (flags & NTA_F_RESERVE)) {
		off = pool_alloc(a, 1, k);
		if (off > 0)
			h->st.reserve_allocs++;
	} else if (off < 0 && (h->pool[1].slabs[k - h->chunk_shift] || nta_pages_budget(a, true) > 0)) {
		h->st.reserve_denied++;
	}
	if (off > 0)
		nta_account_alloc(a, size, 1ull << k);
	return off;
}

int nta_pow2_free(struct nta_arena *a, uint64_t off, size_t size)
{
	struct nta_hdr *h = a->h;
	uint32_t p = (uint32_t)((off - h->data_off) >> h->page_shift);
	struct nta_page *d = pg(a, p);

	if (d->kind == PG_LARGE) {
		uint64_t np = (size + h->page_size - 1) >> h->page_shift, po2 = 1;
		if (off != page_off(a, p))
			return -ENOENT;
		if (size <= h->page_size)
			return -ERANGE;
		while (po2 < np)
			po2 <<= 1;
		return nta_large_free(a, p, size, (uint32_t)po2);
	}
	if (d->kind == PG_FREE)
		return -EALREADY;
	if (d->kind != PG_SLAB)
		return -ENOENT;

	uint32_t k = d->cls, per = 1u << (k - h->chunk_shift);
	uint32_t in = (uint32_t)(off - page_off(a, p)), c = in >> h->chunk_shift;
	int pool = (d->flags & PG_RESERVE) ? 1 : 0;
	if (in & ((1u << k) - 1)) /* not the start of an object */
		return bit_test(bmp(a, p, BMP_USED), c) ? -ENOENT : -EALREADY;
	if (!bit_test(bmp(a, p, BMP_USED), c))
		return -EALREADY;
	if (size > h->page_size || nta_pow2_class(a, size) != k)
		return -ERANGE;

	uint32_t i = in >> k;
	range_clear(bmp(a, p, BMP_USED), c, c + per);
	bit_clear(bmp(a, p, BMP_START), c);
	*obj_next(a, p, i, k) = d->aux;
	d->aux = i + 1;
	d->live--;
	if (d->nfree++ == 0)
		slab_link(a, pool, p);
	nta_account_free(a, size, 1ull << k);
	if (d->nfree == h->page_size >> k) { /* empty: back to pages.c */
		slab_unlink(a, pool, p);
		h->st.small_pages--;
		nta_pages_put(a, p, 1);
	}
	return 0;
}
