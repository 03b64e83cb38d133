// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * reader.c - the zero-copy reader: another process maps the arena
 * read-only, reads fragments in place, and pins what it reads so that their
 * free is deferred until it lets go (the NTA author's "mapped" chunks).
 *
 * The protocol (all seq_cst):
 *   reader, attach: nreaders += 1; claim a slot (pid, start time).
 *   reader, pin:    store off in a free entry of its slot; then load the
 *                   block's live byte: 0 means it was freed already, so take
 *                   the pin back and fail with -ESTALE.
 *   owner, free:    store 0 in the block's live byte; then, if nreaders > 0,
 *                   look for off in every slot; found means defer.
 * In the single total order of these operations, either the owner sees the
 * pin or the reader sees the cleared byte: a block is never freed under a
 * pin that succeeded. Pins are lists per reader, not counts, so a reader
 * that died is reclaimed by clearing its slot (nta_readers_reclaim).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "nta_internal.h"

struct nta_reader {
	struct nta_arena *a;
	struct nta_reader_slot *slot;
};

NTA_API struct nta_reader *nta_reader_attach(const char *path)
{
	struct nta_reader *r = calloc(1, sizeof(*r));
	uint32_t pid = (uint32_t)getpid();

	if (!r)
		return NULL;
	r->a = nta_arena_attach_reader(path);
	if (!r->a) {
		int err = errno;
		free(r);
		errno = err;
		return NULL;
	}
	__atomic_add_fetch(&r->a->rd->nreaders, 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < NTA_MAX_READERS && !r->slot; i++) {
		uint32_t free_pid = 0;
		struct nta_reader_slot *s = &r->a->readers[i];
		if (__atomic_compare_exchange_n(&s->pid, &free_pid, pid, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
			s->starttime = nta_proc_starttime(pid);
			for (int k = 0; k < NTA_READER_PINS; k++)
				__atomic_store_n(&s->pins[k], 0, __ATOMIC_SEQ_CST);
			r->slot = s;
		}
	}
	if (!r->slot) {
		__atomic_sub_fetch(&r->a->rd->nreaders, 1, __ATOMIC_SEQ_CST);
		nta_arena_close(r->a);
		free(r);
		errno = EUSERS;
		return NULL;
	}
	return r;
}

NTA_API void nta_reader_close(struct nta_reader *r)
{
	if (!r)
		return;
	for (int k = 0; k < NTA_READER_PINS; k++)
		__atomic_store_n(&r->slot->pins[k], 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&r->slot->pid, 0, __ATOMIC_SEQ_CST);
	__atomic_sub_fetch(&r->a->rd->nreaders, 1, __ATOMIC_SEQ_CST);
	nta_arena_close(r->a);
	free(r);
}

NTA_API const struct nta_arena *nta_reader_arena(const struct nta_reader *r)
{
	return r ? r->a : NULL;
}

static inline uint8_t *live_byte(const struct nta_arena *a, uint64_t off)
{
	return a->live + ((off - ((uint64_t)a->gpage0 << a->page_shift)) >> a->chunk_shift);
}

static bool in_data(const struct nta_arena *a, uint64_t off)
{
	uint64_t data_off = (uint64_t)a->gpage0 << a->page_shift;
	return off >= data_off && off < data_off + ((uint64_t)a->h->max_pages << a->page_shift) &&
	       !(off & a->chunk_mask);
}

NTA_API int nta_reader_pin(struct nta_reader *r, uint64_t off)
{
	struct nta_reader_slot *s = r->slot;

	if (!in_data(r->a, off))
		return -EINVAL;
	for (int k = 0; k < NTA_READER_PINS; k++) {
		if (__atomic_load_n(&s->pins[k], __ATOMIC_RELAXED))
			continue;
		__atomic_store_n(&s->pins[k], off, __ATOMIC_SEQ_CST);
		if (!__atomic_load_n(live_byte(r->a, off), __ATOMIC_SEQ_CST)) {
			__atomic_store_n(&s->pins[k], 0, __ATOMIC_SEQ_CST);
			return -ESTALE; /* freed before the pin took */
		}
		return 0;
	}
	return -ENOSPC;
}

NTA_API int nta_reader_unpin(struct nta_reader *r, uint64_t off)
{
	for (int k = 0; k < NTA_READER_PINS; k++)
		if (__atomic_load_n(&r->slot->pins[k], __ATOMIC_RELAXED) == off) {
			__atomic_store_n(&r->slot->pins[k], 0, __ATOMIC_SEQ_CST);
			return 0;
		}
	return -ENOENT;
}

bool nta_pinned(const struct nta_arena *a, uint64_t off)
{
	if (!__atomic_load_n(&a->rd->nreaders, __ATOMIC_SEQ_CST))
		return false;
	for (int i = 0; i < NTA_MAX_READERS; i++) {
		const struct nta_reader_slot *s = &a->readers[i];
		if (!__atomic_load_n(&s->pid, __ATOMIC_SEQ_CST))
			continue;
		for (int k = 0; k < NTA_READER_PINS; k++)
			if (__atomic_load_n(&s->pins[k], __ATOMIC_SEQ_CST) == off)
				return true;
	}
	return false;
}

long nta_readers_reclaim(struct nta_arena *a)
{
	long n = 0;

	for (int i = 0; i < NTA_MAX_READERS; i++) {
		struct nta_reader_slot *s = &a->readers[i];
		uint32_t pid = __atomic_load_n(&s->pid, __ATOMIC_SEQ_CST);
		if (!pid || nta_proc_alive(pid, s->starttime))
			continue;
		for (int k = 0; k < NTA_READER_PINS; k++)
			__atomic_store_n(&s->pins[k], 0, __ATOMIC_SEQ_CST);
		if (__atomic_compare_exchange_n(&s->pid, &pid, 0, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
			__atomic_sub_fetch(&a->rd->nreaders, 1, __ATOMIC_SEQ_CST);
			n++;
		}
	}
	return n;
}
