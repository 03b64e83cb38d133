// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * reader.c - the zero-copy reader: another process maps the arena
 * read-only, reads fragments in place, and pins what it reads so that their
 * free is deferred until it lets go (the NTA author's "mapped" chunks).
 *
 * The protocol:
 *   reader, attach: nreaders += 1; claim a slot (pid, start time).
 *   reader, pin:    store off in a free entry of its slot; a full barrier on
 *                   every CPU running the owner (membarrier
 *                   GLOBAL_EXPEDITED, which the owner registered for; a
 *                   seq_cst fence if the call fails); then load the block's
 *                   live byte: 0 means it was freed already, so take the pin
 *                   back and fail with -ESTALE.
 *   owner, free:    store 0 in the block's live byte; then, if nreaders > 0,
 *                   look for off in every slot; found means defer. (Only a
 *                   compiler barrier between: the reader's membarrier is the
 *                   fence; an owner that could not register uses seq_cst.)
 * Either the owner's load comes after the barrier and sees the pin, or its
 * store came before it and the reader sees the cleared byte: a block is
 * never freed under a pin that succeeded. The heavy side is the reader's,
 * which pins rarely; nta_reader_pin_many pays one barrier for a batch. Pins are lists per reader, not counts, so a reader
 * that died is reclaimed by clearing its slot (nta_readers_reclaim).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <sys/syscall.h>
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
	return off >= data_off && off < data_off + ((uint64_t)a->max_pages << a->page_shift) &&
	       !(off & a->chunk_mask);
}

/* The heavy side of the fence (see the protocol above). */
static void owner_barrier(void)
{
	if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0)
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Pin n blocks with one barrier; res[i] gets 0, -ESTALE, -ENOSPC or -EINVAL.
 * Returns how many were pinned. */
NTA_API long nta_reader_pin_many(struct nta_reader *r, const uint64_t *offs, int *res, size_t n)
{
	struct nta_reader_slot *s = r->slot;
	int k = 0;
	long pinned = 0;

	for (size_t i = 0; i < n; i++) {
		res[i] = -EINVAL;
		if (!in_data(r->a, offs[i]))
			continue;
		while (k < NTA_READER_PINS && __atomic_load_n(&s->pins[k], __ATOMIC_RELAXED))
			k++;
		if (k == NTA_READER_PINS) {
			res[i] = -ENOSPC;
			continue;
		}
		__atomic_store_n(&s->pins[k++], offs[i], __ATOMIC_SEQ_CST);
		res[i] = 0;
	}
	owner_barrier();
	for (size_t i = 0; i < n; i++) {
		if (res[i])
			continue;
		if (__atomic_load_n(live_byte(r->a, offs[i]), __ATOMIC_SEQ_CST)) {
			pinned++;
			continue;
		}
		res[i] = -ESTALE; /* freed before the pin took */
		nta_reader_unpin(r, offs[i]);
	}
	return pinned;
}

NTA_API int nta_reader_pin(struct nta_reader *r, uint64_t off)
{
	int res;

	nta_reader_pin_many(r, &off, &res, 1);
	return res;
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
