// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * arena.c - the shared-memory region: create, attach, close, trim.
 * With ringbuf.c (the kernel's ring), the only file that maps memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nta_internal.h"

static bool is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

static uint32_t log2u(uint32_t x)
{
	return 31u - (uint32_t)__builtin_clz(x);
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

/* Fill in defaults, check the geometry, compute the layout into h. */
static int layout(const struct nta_config *cfg, struct nta_hdr *h)
{
	uint32_t kind = cfg->kind ? cfg->kind : NTA_KIND_NTA;
	uint32_t ps = cfg->page_size ? cfg->page_size : NTA_PAGE_SIZE_DEFAULT;
	uint32_t cs = cfg->chunk_size ? cfg->chunk_size : NTA_CHUNK_SIZE_DEFAULT;
	uint32_t depth = cfg->cache_depth == NTA_CACHE_OFF ? 0
			 : cfg->cache_depth ? cfg->cache_depth : NTA_DEFAULT_CACHE;

	if (kind != NTA_KIND_NTA && kind != NTA_KIND_POW2)
		return -EINVAL;
	if (!is_pow2(ps) || ps < 4096 || ps > 65536)
		return -EINVAL;
	if (!is_pow2(cs) || cs < sizeof(struct nta_node) || ps / cs > NTA_MAX_CPP || ps / cs < 2)
		return -EINVAL;
	if (cfg->max_pages == 0 || cfg->reserve_pages >= cfg->max_pages || depth > NTA_CACHE_MAX)
		return -EINVAL;
	if (kind == NTA_KIND_POW2)
		depth = 0;

	memset(h, 0, sizeof(*h));
	h->version = NTA_VERSION;
	h->kind = kind;
	h->page_size = ps;
	h->chunk_size = cs;
	h->page_shift = log2u(ps);
	h->chunk_shift = log2u(cs);
	h->cpp = ps / cs;
	h->words = (h->cpp + 63) / 64;
	h->max_pages = cfg->max_pages;
	h->reserve_pages = cfg->reserve_pages;
	h->cache_depth = depth;
	h->flags = cfg->flags;
	h->hdr_size = sizeof(struct nta_hdr);
	h->desc_off = align_up(sizeof(struct nta_hdr), 64);
	h->bmp_off = align_up(h->desc_off + (uint64_t)h->max_pages * sizeof(struct nta_page), 64);
	h->cache_off = align_up(h->bmp_off + (uint64_t)h->max_pages * 3 * h->words * 8, 64);
	/* page aligned: the live bytes of the first 32 pages in use fill one page, not two (4 KiB of a 1K
	 * producer-consumer window's 540) */
	h->live_off = align_up(h->cache_off + (uint64_t)NTA_MAX_HEAPS * (h->cpp + 1) * depth * 4, 4096);
	h->readers_off = align_up(h->live_off + (uint64_t)h->max_pages * h->cpp, 4096);
	h->data_off = align_up(h->readers_off + NTA_READERS_BYTES, ps);
	h->total_size = h->data_off + ((uint64_t)h->max_pages << h->page_shift);
	if ((h->total_size >> h->chunk_shift) > UINT32_MAX) /* chunk indices are 32-bit */
		return -E2BIG;
	h->heaps[HEAP_ARENA].kind = kind;
	h->heaps[HEAP_ARENA].cache_limit = kind == NTA_KIND_NTA ? depth : 0;
	h->heaps[HEAP_ARENA_RESERVE].kind = kind;
	h->heaps[HEAP_ARENA_RESERVE].flags = HEAP_RESERVE;
	h->st.pages_max = h->max_pages;
	h->st.reserve_pages = h->reserve_pages;
	h->st.arena_bytes = h->total_size;
	h->st.data_off = h->data_off;
	return 0;
}

void nta_arena_derive(struct nta_arena *a, const struct nta_hdr *g)
{
	struct nta_hdr *h = (struct nta_hdr *)a->base;

	a->h = h;
	a->desc = (struct nta_page *)(a->base + g->desc_off);
	a->bmp = (uint64_t *)(a->base + g->bmp_off);
	a->cache = (uint32_t *)(a->base + g->cache_off);
	a->live = a->base + g->live_off;
	a->rd = (struct nta_readers *)(a->base + g->readers_off);
	a->readers = (struct nta_reader_slot *)(a->base + g->readers_off + sizeof(struct nta_readers));
	a->st = &h->st;
	a->heaps = h->heaps;
	a->kind = g->kind;
	a->page_size = g->page_size;
	a->page_shift = g->page_shift;
	a->chunk_shift = g->chunk_shift;
	a->chunk_size = g->chunk_size;
	a->chunk_mask = g->chunk_size - 1;
	a->cpp = g->cpp;
	a->words = g->words;
	a->depth = g->cache_depth;
	a->max_pages = g->max_pages;
	a->reserve_pages = g->reserve_pages;
	a->cfg_flags = g->flags;
	a->data_off = g->data_off;
	a->gpage0 = (uint32_t)(g->data_off >> g->page_shift);
	a->geom_default = g->page_size == NTA_PAGE_SIZE_DEFAULT && g->chunk_size == NTA_CHUNK_SIZE_DEFAULT &&
			  g->cache_depth == NTA_DEFAULT_CACHE;
	a->fast = a->geom_default && a->kind == NTA_KIND_NTA && a->writable;
}

void *nta_zero_map(size_t bytes)
{
	void *m = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return m == MAP_FAILED ? NULL : m;
}

void nta_zero_unmap(void *m, size_t bytes)
{
	if (m)
		munmap(m, bytes ? bytes : 1);
}

static void arena_free(struct nta_arena *a)
{
	if (a->base && a->base != MAP_FAILED)
		munmap(a->base, a->size);
	if (a->fd >= 0)
		close(a->fd);
	free(a->path);
	free(a);
}

static struct nta_arena *arena_new(const char *path)
{
	struct nta_arena *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->fd = -1;
	if (path && !(a->path = strdup(path))) {
		free(a);
		return NULL;
	}
	return a;
}

static struct nta_arena *create(const char *path, const struct nta_config *cfg, struct nta_hdr *h)
{
	struct nta_arena *a;
	int err;

	if (!cfg) {
		errno = EINVAL;
		return NULL;
	}
	err = layout(cfg, h);
	if (err) {
		errno = -err;
		return NULL;
	}
	a = arena_new(path);
	if (!a)
		return NULL;
	a->fd = path ? open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
		     : memfd_create("nta-arena", MFD_CLOEXEC);
	if (a->fd < 0)
		goto fail;
	a->creator = true;
	a->writable = true;
	/* Sparse: only touched pages take memory ("commit as it grows"). */
	if (ftruncate(a->fd, (off_t)h->total_size) < 0)
		goto fail_unlink;
	a->size = h->total_size;
	a->base = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (a->base == MAP_FAILED)
		goto fail_unlink;
	/* What is not zero: the geometry and the arena's own heaps, then the counters. The pools' heaps are
	 * zero in a new file, and left untouched they take no memory (36 KiB of the header). */
	memcpy(a->base, h, offsetof(struct nta_hdr, heaps) + 2 * sizeof(struct nta_heap));
	memcpy(a->base + offsetof(struct nta_hdr, st), &h->st, sizeof(h->st));
	nta_arena_derive(a, h);
	a->h->owner_pid = (uint32_t)getpid();
	/* The magic goes in last: a reader never validates a half-made arena. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(a->h->magic, NTA_MAGIC, 8);
	return a;

fail_unlink:
	err = errno;
	if (path)
		unlink(path);
	errno = err;
fail:
	err = errno;
	arena_free(a);
	errno = err;
	return NULL;
}

/* The header is made in scratch memory handed back at once: made on the stack, its 42 KiB stayed resident
 * in the creating thread for good. */
NTA_API struct nta_arena *nta_arena_create(const char *path, const struct nta_config *cfg)
{
	struct nta_hdr *h = nta_zero_map(sizeof(*h));
	struct nta_arena *a;
	int err;

	if (!h)
		return NULL;
	a = create(path, cfg, h);
	err = errno;
	nta_zero_unmap(h, sizeof(*h));
	errno = err;
	return a;
}

/* Start time of pid (field 22 of /proc/pid/stat), 0 when it is gone or a zombie. */
NTA_API uint64_t nta_proc_starttime(uint32_t pid)
{
	char path[64], buf[512];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return 0;
	p += 2;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	return p ? strtoull(p, NULL, 10) : 0;
}

bool nta_proc_alive(uint32_t pid, uint64_t starttime)
{
	return pid && nta_proc_starttime(pid) == starttime;
}

static struct nta_arena *attach(const char *path, int writable, bool reader);

NTA_API struct nta_arena *nta_arena_attach(const char *path, int writable)
{
	return attach(path, writable, false);
}

/* A zero-copy reader: the arena read-only, its pin slots writable. */
struct nta_arena *nta_arena_attach_reader(const char *path)
{
	return attach(path, 0, true);
}

static struct nta_arena *attach(const char *path, int writable, bool reader)
{
	struct nta_arena *a;
	struct nta_hdr h, want;
	struct nta_config cfg;
	struct stat stb;
	int err = EINVAL;

	if (!path) {
		errno = EINVAL;
		return NULL;
	}
	a = arena_new(path);
	if (!a)
		return NULL;
	a->writable = writable != 0;
	a->fd = open(path, (writable || reader ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (a->fd < 0 || fstat(a->fd, &stb) < 0) {
		err = errno;
		goto fail;
	}
	if ((uint64_t)stb.st_size < sizeof(h) || pread(a->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		err = EBADMSG;
		goto fail;
	}
	if (memcmp(h.magic, NTA_MAGIC, 8) != 0) {
		err = EBADMSG;
		goto fail;
	}
	if (h.version != NTA_VERSION) {
		err = EPROTO;
		goto fail;
	}
	/* The geometry must produce exactly this layout. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.kind = h.kind;
	cfg.page_size = h.page_size;
	cfg.chunk_size = h.chunk_size;
	cfg.max_pages = h.max_pages;
	cfg.reserve_pages = h.reserve_pages;
	cfg.cache_depth = h.cache_depth ? h.cache_depth : NTA_CACHE_OFF;
	cfg.flags = h.flags;
	if (layout(&cfg, &want) != 0 || want.desc_off != h.desc_off || want.bmp_off != h.bmp_off ||
	    want.live_off != h.live_off || want.readers_off != h.readers_off ||
	    want.cache_off != h.cache_off || want.data_off != h.data_off ||
	    want.total_size != h.total_size || (uint64_t)stb.st_size != h.total_size ||
	    want.page_size != h.page_size || want.chunk_size != h.chunk_size || want.page_shift != h.page_shift ||
	    want.chunk_shift != h.chunk_shift || want.cpp != h.cpp || want.words != h.words ||
	    want.cache_depth != h.cache_depth || h.hdr_size != sizeof(struct nta_hdr) || h.top > h.max_pages) {
		err = EBADMSG;
		goto fail;
	}
	a->size = h.total_size;
	a->base = mmap(NULL, a->size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, a->fd, 0);
	if (a->base == MAP_FAILED) {
		err = errno;
		goto fail;
	}
	if (reader && !writable) { /* the pin slots, and only they, writable */
		size_t len = NTA_READERS_BYTES;
		if (mmap(a->base + h.readers_off, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, a->fd,
			 (off_t)h.readers_off) == MAP_FAILED) {
			err = errno;
			goto fail;
		}
	}
	nta_arena_derive(a, &want); /* the geometry validated above, not what the mapping holds now */
	return a;
fail:
	arena_free(a);
	errno = err;
	return NULL;
}

NTA_API void nta_arena_close(struct nta_arena *a)
{
	if (!a)
		return;
	if (a->creator && a->path && (a->cfg_flags & NTA_ARENA_UNLINK))
		unlink(a->path);
	arena_free(a);
}

NTA_API int nta_arena_config(const struct nta_arena *a, struct nta_config *cfg)
{
	if (!a || !cfg)
		return -EINVAL;
	memset(cfg, 0, sizeof(*cfg)); /* the validated geometry: a reader sizes its buffers by it */
	cfg->kind = a->kind;
	cfg->page_size = a->page_size;
	cfg->chunk_size = a->chunk_size;
	cfg->max_pages = a->max_pages;
	cfg->reserve_pages = a->reserve_pages;
	cfg->cache_depth = a->depth ? a->depth : NTA_CACHE_OFF;
	cfg->flags = a->cfg_flags;
	return 0;
}

NTA_API int nta_arena_fd(const struct nta_arena *a)
{
	return a ? a->fd : -EINVAL;
}

NTA_API void *nta_arena_base(const struct nta_arena *a)
{
	return a ? a->base : NULL;
}

/* Hand back the memory of every free run of pages that still holds some. */
NTA_API long nta_arena_trim(struct nta_arena *a)
{
	struct nta_hdr *h = a->h;
	long handed = 0;

	if (!a->writable)
		return -EROFS;
	for (uint32_t p = 0; p < h->top;) {
		struct nta_page *d = pg(a, p);
		if (d->kind != PG_FREE) {
			p++;
			continue;
		}
		uint32_t run = d->run, committed = 0;
		for (uint32_t i = p; i < p + run; i++)
			committed += !(pg(a, i)->flags & PG_DECOMMITTED);
		if (committed) {
			/* tmpfs/memfd: MADV_REMOVE frees the backing pages; reads give zeros. */
			if (madvise(a->base + page_off(a, p), (size_t)run << h->page_shift, MADV_REMOVE) < 0)
				return -errno;
			for (uint32_t i = p; i < p + run; i++)
				pg(a, i)->flags |= PG_DECOMMITTED;
			h->st.pages_committed -= committed;
			h->st.pages_trimmed += committed;
			handed += committed;
		}
		p += run;
	}
	return handed;
}
