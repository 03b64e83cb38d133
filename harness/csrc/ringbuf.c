// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ringbuf.c - drain a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) in C, in
 * batches, into an array of fixed-size records: no call per record into
 * Python, no callback.
 *
 * The ring is a kernel ABI (kernel/bpf/ringbuf.c): the consumer page at
 * offset 0 (ours to write: consumer_pos), then the producer page
 * (producer_pos) and the data, mapped twice in a row so a record that wraps
 * reads as one piece. Each record starts with an 8-byte header: a 32-bit
 * length with a busy bit (being written: stop there) and a discard bit
 * (skip it), and is padded to 8 bytes (BPF_RINGBUF_* in <linux/bpf.h>).
 * Positions are read with acquire and the consumer position is published
 * with release, as libbpf does. The ring's size comes from the map.
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctl.h"

#define RB_BUSY BPF_RINGBUF_BUSY_BIT
#define RB_DISCARD BPF_RINGBUF_DISCARD_BIT
#define RB_HDR BPF_RINGBUF_HDR_SZ

struct nta_ringbuf {
	unsigned long *consumer;
	const unsigned long *producer;
	const uint8_t *data;
	size_t size, page;
};

struct nta_ringbuf *nta_ringbuf_open(int map_fd)
{
	struct bpf_map_info info = { 0 };
	uint32_t len = sizeof(info);
	struct nta_ringbuf *rb;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), size;

	if (map_fd < 0 || bpf_obj_get_info_by_fd(map_fd, &info, &len) || info.type != BPF_MAP_TYPE_RINGBUF) {
		errno = EINVAL;
		return NULL;
	}
	size = info.max_entries; /* the kernel took it only as a power-of-two multiple of the page */
	rb = calloc(1, sizeof(*rb));
	if (!rb)
		return NULL;
	rb->size = size;
	rb->page = page;
	rb->consumer = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (rb->consumer == MAP_FAILED) {
		int err = errno;
		free(rb);
		errno = err;
		return NULL;
	}
	void *p = mmap(NULL, page + 2 * size, PROT_READ, MAP_SHARED, map_fd, (off_t)page);
	if (p == MAP_FAILED) {
		int err = errno;
		munmap(rb->consumer, page);
		free(rb);
		errno = err;
		return NULL;
	}
	rb->producer = p;
	rb->data = (const uint8_t *)p + page;
	return rb;
}

void nta_ringbuf_close(struct nta_ringbuf *rb)
{
	if (!rb)
		return;
	munmap(rb->consumer, rb->page);
	munmap((void *)rb->producer, rb->page + 2 * rb->size);
	free(rb);
}

size_t nta_ringbuf_size(const struct nta_ringbuf *rb)
{
	return rb->size;
}

/* Bytes written and not yet consumed. */
long nta_ringbuf_avail(const struct nta_ringbuf *rb)
{
	unsigned long prod = __atomic_load_n(rb->producer, __ATOMIC_ACQUIRE);

	return (long)(prod - __atomic_load_n(rb->consumer, __ATOMIC_ACQUIRE));
}

long nta_ringbuf_drain(struct nta_ringbuf *rb, void *out, size_t rec_size, size_t max, uint64_t *odd)
{
	unsigned long cons = __atomic_load_n(rb->consumer, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(rb->producer, __ATOMIC_ACQUIRE);
	size_t n = 0, mask = rb->size - 1;
	uint8_t *dst = out;

	while (cons < prod && n < max) {
		const uint32_t *hdr = (const uint32_t *)(rb->data + (cons & mask));
		uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
		if (len & RB_BUSY)
			break; /* still being written */
		uint32_t body = len & ~(RB_BUSY | RB_DISCARD);
		if (!(len & RB_DISCARD)) {
			if (body == rec_size)
				memcpy(dst + n++ * rec_size, (const uint8_t *)hdr + RB_HDR, rec_size);
			else if (odd)
				(*odd)++; /* a record of another size: not ours */
		}
		cons += (body + RB_HDR + 7) & ~7ul;
	}
	__atomic_store_n(rb->consumer, cons, __ATOMIC_RELEASE);
	return (long)n;
}
