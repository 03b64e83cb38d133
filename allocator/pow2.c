// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pow2.c - the baseline the NTA is measured against, on a heap: a SLAB-like
 * allocator with one size class per power of two (kmalloc's shape). A page
 * holds objects of one class, threaded on an in-page free list; a class
 * keeps a list of its partial pages in its heap. An empty slab goes back to
 * the heap's feeder, unless it is a pool's heap's only partial slab of its
 * class (kept, as SLUB keeps partial slabs, so that an object allocated and
 * freed over and over does not take and give back a page each time): a
 * class keeps at most one empty slab. Blocks larger than a page take a power-of-two number of
 * pages (alloc.c), as kmalloc_large does with page orders.
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
	return k < a->chunk_shift ? a->chunk_shift : k;
}

uint32_t nta_pow2_pages(uint64_t npages)
{
	return npages <= 1 ? 1 : 1u << (64 - __builtin_clzll(npages - 1));
}

static uint32_t *obj_next(const struct nta_arena *a, uint32_t p, uint32_t i, uint32_t k)
{
	return (uint32_t *)(a->base + page_off(a, p) + ((uint64_t)i << k));
}

static uint32_t *slab_head(const struct nta_arena *a, uint32_t h, uint32_t k)
{
	return &a->heaps[h].lists.slabs[k - a->chunk_shift];
}

static void slab_link(struct nta_arena *a, uint32_t h, uint32_t p)
{
	struct nta_page *d = pg(a, p);
	uint32_t *head = slab_head(a, h, d->cls);

	d->prev = 0;
	d->next = *head;
	if (d->next)
		pg(a, d->next - 1)->prev = p + 1;
	*head = p + 1;
}

static void slab_unlink(struct nta_arena *a, uint32_t h, uint32_t p)
{
	struct nta_page *d = pg(a, p);

	if (d->prev)
		pg(a, d->prev - 1)->next = d->next;
	else
		*slab_head(a, h, d->cls) = d->next;
	if (d->next)
		pg(a, d->next - 1)->prev = d->prev;
	d->next = d->prev = 0;
}

static int64_t slab_new(struct nta_arena *a, uint32_t h, uint32_t k)
{
	int64_t p = nta_heap_page_get(a, h, PG_SLAB);

	if (p < 0)
		return p;
	struct nta_page *d = pg(a, (uint32_t)p);
	uint32_t objs = a->page_size >> k;
	d->cls = (uint8_t)k;
	d->nfree = (uint16_t)objs;
	for (uint32_t i = 0; i < objs; i++)
		*obj_next(a, (uint32_t)p, i, k) = i + 1 < objs ? i + 2 : 0;
	d->aux = 1;
	slab_link(a, h, (uint32_t)p);
	return p;
}

int64_t nta_slab_alloc(struct nta_arena *a, uint32_t h, size_t size)
{
	uint32_t k = nta_pow2_class(a, size), head = *slab_head(a, h, k);
	int64_t p = head ? (int64_t)head - 1 : slab_new(a, h, k);

	if (p < 0)
		return p;
	struct nta_page *d = pg(a, (uint32_t)p);
	uint32_t i = d->aux - 1, per = 1u << (k - a->chunk_shift);
	d->aux = *obj_next(a, (uint32_t)p, i, k);
	d->nfree--;
	d->live++;
	if (!d->nfree)
		slab_unlink(a, h, (uint32_t)p);
	range_set(bmp(a, (uint32_t)p, BMP_USED), i * per, (i + 1) * per);
	bit_set(bmp(a, (uint32_t)p, BMP_START), i * per);
	a->heaps[h].live++;
	a->heaps[h].handed += 1ull << k;
	return (int64_t)page_off(a, (uint32_t)p) + ((int64_t)i << k);
}

int nta_slab_free(struct nta_arena *a, uint32_t p, uint64_t off, size_t size)
{
	struct nta_page *d = pg(a, p);
	uint32_t h = d->heap, k = d->cls, per = 1u << (k - a->chunk_shift);
	uint32_t in = (uint32_t)(off - page_off(a, p)), c = in >> a->chunk_shift;

	if (in & ((1u << k) - 1)) /* not the start of an object */
		return bit_test(bmp(a, p, BMP_USED), c) ? -ENOENT : -EALREADY;
	if (!bit_test(bmp(a, p, BMP_USED), c))
		return -EALREADY;
	if (size > a->page_size || nta_pow2_class(a, size) != k)
		return -ERANGE;

	uint32_t i = in >> k;
	range_clear(bmp(a, p, BMP_USED), c, c + per);
	bit_clear(bmp(a, p, BMP_START), c);
	*obj_next(a, p, i, k) = d->aux;
	d->aux = i + 1;
	d->live--;
	a->heaps[h].live--;
	a->heaps[h].handed -= 1ull << k;
	if (d->nfree++ == 0)
		slab_link(a, h, p);
	/* empty: back to the heap's feeder, but a pool's heap keeps a class's last slab */
	if (d->nfree == a->page_size >> k && !(nta_heap_keeps_idle(a, h) && *slab_head(a, h, k) == p + 1 && !d->next)) {
		slab_unlink(a, h, p);
		nta_heap_page_put(a, h, p);
	}
	return 0;
}

/* Does heap h keep an empty slab? (A class keeps at most one, as its only partial slab.) */
bool nta_slab_idle(const struct nta_arena *a, uint32_t h)
{
	for (uint32_t k = a->chunk_shift; k <= a->page_shift; k++) {
		uint32_t q = *slab_head(a, h, k);
		if (q && a->desc[q - 1].nfree == a->page_size >> k)
			return true;
	}
	return false;
}

/* Give back heap h's empty slabs, the ones a pool's heap keeps. */
void nta_slab_release_empty(struct nta_arena *a, uint32_t h)
{
	for (uint32_t k = a->chunk_shift; k <= a->page_shift; k++)
		for (uint32_t q = *slab_head(a, h, k), next; q; q = next) {
			next = pg(a, q - 1)->next;
			if (pg(a, q - 1)->nfree == a->page_size >> k) {
				slab_unlink(a, h, q - 1);
				nta_heap_page_put(a, h, q - 1);
			}
		}
}
