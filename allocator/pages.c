// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pages.c - whole pages: runs of free pages, combined with their neighbours
 * on release, and the top of the arena, below which every page has been used.
 *
 * A free run keeps its length in the descriptors of its first and last page
 * (boundary tags), so releasing a run finds and combines its neighbours in
 * O(1). Runs of 1..63 pages have a list each, longer ones a list per power of
 * two; a bitmap of non-empty lists finds the first that fits without scanning.
 *
 * Budgets: ordinary allocations may hold at most max_pages - reserve_pages
 * pages; reserve allocations (NTA_F_RESERVE, when ordinary memory is out) at
 * most reserve_pages more. Pages taken under the reserve carry PG_RESERVE
 * until they come back here.
 */
#include <errno.h>

#include "nta_internal.h"

uint32_t nta_run_class(uint32_t n)
{
	if (n < NTA_RUN_EXACT)
		return n;
	return NTA_RUN_EXACT + (31u - (uint32_t)__builtin_clz(n)) - 6u;
}

static void run_link(struct nta_arena *a, uint32_t p, uint32_t n)
{
	struct nta_hdr *h = a->h;
	uint32_t c = nta_run_class(n);
	struct nta_page *d = pg(a, p);

	d->run = n;
	pg(a, p + n - 1)->run = n;
	d->prev = 0;
	d->next = h->run_heads[c];
	if (d->next)
		pg(a, d->next - 1)->prev = p + 1;
	h->run_heads[c] = p + 1;
	h->run_nonempty[c >> 6] |= 1ull << (c & 63);
}

static void run_unlink(struct nta_arena *a, uint32_t p)
{
	struct nta_hdr *h = a->h;
	struct nta_page *d = pg(a, p);
	uint32_t c = nta_run_class(d->run);

	if (d->prev)
		pg(a, d->prev - 1)->next = d->next;
	else
		h->run_heads[c] = d->next;
	if (d->next)
		pg(a, d->next - 1)->prev = d->prev;
	if (!h->run_heads[c])
		h->run_nonempty[c >> 6] &= ~(1ull << (c & 63));
	d->next = d->prev = 0;
}

/* First free run of at least n pages, or -1. */
static int64_t run_find(const struct nta_arena *a, uint32_t n)
{
	const struct nta_hdr *h = a->h;
	uint32_t c = nta_run_class(n);

	if (c >= NTA_RUN_EXACT) {
		/* A power-of-two list holds lengths [2^k, 2^(k+1)): first fit within it. */
		for (uint32_t q = h->run_heads[c]; q; q = pg(a, q - 1)->next)
			if (pg(a, q - 1)->run >= n)
				return q - 1;
		c++;
	}
	for (uint32_t w = c >> 6; w < NTA_RUN_CLASSES / 64; w++) {
		uint64_t m = h->run_nonempty[w];
		if (w == c >> 6)
			m &= ~0ull << (c & 63);
		if (m)
			return h->run_heads[w * 64 + (uint32_t)__builtin_ctzll(m)] - 1;
	}
	return -1;
}

/* Pages that allocations of this kind may still take. */
uint64_t nta_pages_budget(const struct nta_arena *a, bool reserve)
{
	const struct nta_hdr *h = a->h;
	uint64_t res = h->st.reserve_pages_in_use, ord = h->st.pages_in_use - res;

	if (reserve)
		return h->reserve_pages - res;
	return (h->max_pages - h->reserve_pages) - ord;
}

/*
 * Take a run of n pages, from the free runs or the top. The caller sets the
 * pages' kind. Returns the first page's index or -ENOMEM.
 */
int64_t nta_pages_get(struct nta_arena *a, uint32_t n, bool reserve)
{
	struct nta_hdr *h = a->h;
	int64_t p;

	if (n == 0 || nta_pages_budget(a, reserve) < n)
		return -ENOMEM;
	p = run_find(a, n);
	if (p >= 0) {
		uint32_t len = pg(a, (uint32_t)p)->run;
		run_unlink(a, (uint32_t)p);
		if (len > n) /* the rest stays free, as its own run */
			run_link(a, (uint32_t)p + n, len - n);
	} else if ((uint64_t)h->top + n <= h->max_pages) {
		p = h->top;
		h->top += n;
		h->st.pages_committed += n;
	} else {
		return -ENOMEM;
	}
	for (uint32_t i = (uint32_t)p; i < (uint32_t)p + n; i++) {
		struct nta_page *d = pg(a, i);
		if (d->flags & PG_DECOMMITTED)
			h->st.pages_committed++;
		*d = (struct nta_page){ .flags = reserve ? PG_RESERVE : 0 };
	}
	h->st.pages_in_use += n;
	if (reserve)
		h->st.reserve_pages_in_use += n;
	PEAK(&h->st, pages_in_use, peak_pages_in_use);
	PEAK(&h->st, pages_committed, peak_pages_committed);
	PEAK(&h->st, reserve_pages_in_use, peak_reserve_pages_in_use);
	return p;
}

/* Give back pages [p, p + n) and combine them with free neighbours. */
void nta_pages_put(struct nta_arena *a, uint32_t p, uint32_t n)
{
	struct nta_hdr *h = a->h;
	uint32_t start = p, len = n;

	if (pg(a, p)->flags & PG_RESERVE)
		h->st.reserve_pages_in_use -= n;
	h->st.pages_in_use -= n;
	for (uint32_t i = p; i < p + n; i++) {
		struct nta_page *d = pg(a, i);
		*d = (struct nta_page){ .kind = PG_FREE, .flags = d->flags & PG_DECOMMITTED };
	}
	if (p > 0 && pg(a, p - 1)->kind == PG_FREE) {
		uint32_t left = pg(a, p - 1)->run;
		start = p - left;
		len += left;
		run_unlink(a, start);
	}
	if (p + n < h->top && pg(a, p + n)->kind == PG_FREE) {
		len += pg(a, p + n)->run;
		run_unlink(a, p + n);
	}
	run_link(a, start, len);
}
