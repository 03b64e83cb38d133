// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_dtor.c - what happens to a page nobody holds any more (its last
 * holder let go, or its heap emptied it): its destructor's verdict. Recycle
 * (the default: the alloc cache from the owner's context, else the ring,
 * else the arena), steal (the destructor keeps the page, which comes back
 * with one holder) or release (back to the arena, unmapped). With
 * NTA_POOL_BATCH_DTOR the pages wait instead, to be taken and judged in
 * batches (Python, where a call per page would cost more than the page).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

static void apply_verdict(struct nta_pool *p, uint32_t i, int verdict, bool direct)
{
	struct pp_page *r = &p->pg[i];

	switch (verdict) {
	case NTA_DTOR_STEAL: /* the destructor keeps it: one holder, whole */
		r->state = r->state == PP_LARGE ? PP_LARGE : PP_PAGE;
		r->frag = 0;
		__atomic_store_n(live_byte(p, off_of(p, i)), 1, __ATOMIC_RELEASE);
		p->st.destructor.dtor_steal++;
		p->st.pages.pages_in_use += pp_pages(r);
		break;
	case NTA_DTOR_RELEASE:
		p->st.destructor.dtor_release++;
		p->st.recycle.released_refcnt++;
		pool_page_to_arena(p, i);
		break;
	default:
		pool_recycle(p, i, direct);
	}
}

void pool_page_unused(struct nta_pool *p, uint32_t i, bool direct)
{
	struct pp_page *r = &p->pg[i];

	if (p->cfg.flags & NTA_POOL_BATCH_DTOR) {
		if (p->npending == p->pending_cap) {
			size_t cap = p->pending_cap ? p->pending_cap * 2 : 256;
			int64_t *np = realloc(p->pending, cap * sizeof(*np));
			if (!np) { /* no room to wait: judge it now, as the default would */
				apply_verdict(p, i, NTA_DTOR_RECYCLE, direct);
				return;
			}
			p->pending = np;
			p->pending_cap = cap;
		}
		r->npages = pp_pages(r);
		r->state = PP_PENDING;
		p->pending[p->npending++] = (int64_t)off_of(p, i);
		p->st.destructor.dtor_pending++;
		return;
	}
	if (p->dtor) {
		p->st.destructor.dtor_calls++;
		apply_verdict(p, i, p->dtor(p->dtor_ctx, p, off_of(p, i)), direct);
		return;
	}
	pool_recycle(p, i, direct);
}

NTA_API int nta_pool_set_dtor(struct nta_pool *p, nta_pool_dtor_fn fn, void *ctx)
{
	p->dtor = fn;
	p->dtor_ctx = ctx;
	p->direct_cap = fn || (p->cfg.flags & NTA_POOL_BATCH_DTOR) ? 0 : p->cfg.cache_size;
	return 0;
}

NTA_API long nta_pool_dtor_take(struct nta_pool *p, int64_t *pages, size_t n)
{
	size_t k = n < p->npending ? n : p->npending;

	memcpy(pages, p->pending, k * sizeof(*pages));
	memmove(p->pending, p->pending + k, (p->npending - k) * sizeof(*pages));
	p->npending -= k;
	return (long)k;
}

NTA_API int nta_pool_dtor_complete(struct nta_pool *p, const int64_t *pages, const int32_t *verdicts, size_t n)
{
	const uint64_t data_off = (uint64_t)p->a->gpage0 << p->a->page_shift;

	for (size_t k = 0; k < n; k++) { /* check all before changing any */
		uint64_t off = (uint64_t)pages[k];
		if (off < data_off || off >= data_off + ((uint64_t)p->npg << p->a->page_shift) ||
		    off != off_of(p, page_of(p, off)))
			return -ENOENT;
		if (p->pg[page_of(p, off)].state != PP_PENDING || verdicts[k] < NTA_DTOR_RECYCLE ||
		    verdicts[k] > NTA_DTOR_RELEASE)
			return -EINVAL;
	}
	for (size_t k = 0; k < n; k++) {
		uint32_t i = page_of(p, (uint64_t)pages[k]);
		struct pp_page *r = &p->pg[i];
		r->state = r->npages > 1 ? PP_LARGE : PP_PAGE;
		p->st.destructor.dtor_pending--;
		p->st.destructor.dtor_calls++;
		apply_verdict(p, i, verdicts[k], true);
	}
	return 0;
}
