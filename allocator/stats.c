// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * stats.c - counters, the page map and the free-region histogram.
 * Read-only: these work on an arena attached by a reader too.
 */
#include <errno.h>
#include <string.h>

#include "nta_internal.h"

/*
 * Largest block an ordinary allocation would get now, in bytes. A reader may call this on an arena its
 * owner is writing (or a damaged one): every index read from it is checked, and every walk is bounded
 * by the validated geometry.
 */
static uint64_t largest_free(const struct nta_arena *a)
{
	const struct nta_hdr *h = a->h;
	uint64_t small = 0, run = 0, budget = nta_pages_budget(a, false), top = nta_top(a);

	if (a->kind == NTA_KIND_NTA) {
		const uint64_t *nonempty = h->heaps[HEAP_ARENA].lists.nonempty;
		for (int w = NTA_CLASS_WORDS - 1; w >= 0; w--) {
			uint64_t m = __atomic_load_n(&nonempty[w], __ATOMIC_RELAXED);
			if (m) {
				small = (uint64_t)(w * 64 + 63 - __builtin_clzll(m)) << a->chunk_shift;
				break;
			}
		}
	}
	for (int c = NTA_RUN_CLASSES - 1; c >= 0 && !run; c--) {
		uint32_t q = __atomic_load_n(&h->run_heads[c], __ATOMIC_RELAXED);
		for (uint32_t steps = 0; q && q - 1 < a->max_pages && steps < a->max_pages; steps++) {
			const struct nta_page *d = pg(a, q - 1);
			uint32_t len = __atomic_load_n(&d->run, __ATOMIC_RELAXED);
			if (len > run && len <= a->max_pages)
				run = len;
			q = __atomic_load_n(&d->next, __ATOMIC_RELAXED);
		}
	}
	if (a->max_pages - top > run)
		run = a->max_pages - top;
	if (run > budget)
		run = budget;
	run <<= a->page_shift;
	return run > small ? run : small;
}

NTA_API int nta_stats(const struct nta_arena *a, struct nta_stats *st)
{
	if (!a || !st)
		return -EINVAL;
	memcpy(st, &a->h->st, sizeof(*st));
	st->live_allocs = st->allocs - st->frees;
	st->cached_blocks = 0;
	for (uint32_t h = 0; h < NTA_MAX_HEAPS; h++)
		st->cached_blocks += a->heaps[h].parked;
	st->largest_free = largest_free(a);
	/* the geometry as validated, not as the header says now */
	st->pages_max = a->max_pages;
	st->reserve_pages = a->reserve_pages;
	st->arena_bytes = a->size;
	st->data_off = a->data_off;
	return 0;
}

NTA_API long nta_page_map(const struct nta_arena *a, uint8_t *map, size_t npages)
{
	uint32_t cpp = a->cpp, top = nta_top(a);

	if (npages > a->max_pages)
		return -EINVAL;
	for (uint32_t p = 0; p < npages; p++) {
		const struct nta_page *d = pg(a, p);
		uint8_t *row = map + (size_t)p * cpp;
		switch (p < top ? __atomic_load_n(&d->kind, __ATOMIC_RELAXED) : PG_UNTOUCHED) {
		case PG_FREE:
			memset(row, (d->flags & PG_DECOMMITTED) ? NTA_CELL_UNTOUCHED : NTA_CELL_FREE, cpp);
			break;
		case PG_SMALL:
		case PG_SLAB:
		case PG_CARVE: {
			const uint64_t *used = bmp(a, p, BMP_USED), *start = bmp(a, p, BMP_START);
			const uint64_t *cached = bmp(a, p, BMP_CACHED);
			uint8_t cell = NTA_CELL_FREE;
			for (uint32_t c = 0; c < cpp; c++) {
				if (!bit_test(used, c))
					cell = NTA_CELL_FREE;
				else if (bit_test(start, c))
					cell = bit_test(cached, c) ? NTA_CELL_CACHED : NTA_CELL_USED;
				row[c] = cell;
			}
			break;
		}
		case PG_LARGE:
		case PG_LARGE_TAIL:
			memset(row, NTA_CELL_LARGE, cpp);
			break;
		case PG_POOL: /* held whole by a pool: its own page map says how */
			memset(row, NTA_CELL_USED, cpp);
			break;
		default:
			memset(row, NTA_CELL_UNTOUCHED, cpp);
		}
	}
	return (long)(npages * cpp);
}

NTA_API long nta_free_histogram(const struct nta_arena *a, uint64_t *hist, size_t nbins, uint64_t *page_runs)
{
	uint32_t top = nta_top(a);
	long regions = 0;

	if (!nbins)
		return -EINVAL;
	memset(hist, 0, nbins * sizeof(*hist));
	for (uint32_t p = 0; p < top; p++) {
		uint8_t kind = __atomic_load_n(&pg(a, p)->kind, __ATOMIC_RELAXED);
		if (kind != PG_SMALL && kind != PG_SLAB && kind != PG_CARVE)
			continue;
		const uint64_t *used = bmp(a, p, BMP_USED);
		for (uint32_t c = 0; c < a->cpp;) {
			if (bit_test(used, c)) {
				c++;
				continue;
			}
			uint32_t e = bit_next_set(used, c, a->cpp), n = e - c;
			hist[n < nbins ? n : nbins - 1]++;
			regions++;
			c = e;
		}
	}
	if (page_runs) {
		*page_runs = 0;
		for (uint32_t p = 0; p < top;) {
			const struct nta_page *d = pg(a, p);
			uint32_t run = __atomic_load_n(&d->run, __ATOMIC_RELAXED);
			if (__atomic_load_n(&d->kind, __ATOMIC_RELAXED) == PG_FREE) {
				(*page_runs)++;
				regions++;
				p += run ? run : 1; /* a run of 0 (torn or damaged) still moves on */
			} else {
				p++;
			}
		}
	}
	return regions;
}
