/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bench.h - what the trace drivers (trace.c, xthread.c) share: the trace
 * file's magic, the memory a run holds, the clock, and sorting the times.
 */
#ifndef NTA_BENCH_H
#define NTA_BENCH_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TRACE_MAGIC 0x4e544154u /* "NTAT" */

/* A trace file: uint32 header {magic, window, n}, then n uint32 sizes, then n uint32 slots. */
struct trace {
	uint32_t window, n;
	uint32_t *sizes, *slots;
};

/* Read path into t; on a bad file, one line on stderr (prog: path: what) and -1. */
static inline int trace_read(const char *prog, const char *path, struct trace *t)
{
	FILE *f = fopen(path, "rb");
	uint32_t hdr[3];

	if (!f || fread(hdr, 4, 3, f) != 3 || hdr[0] != TRACE_MAGIC) {
		fprintf(stderr, "%s: %s: not a trace file\n", prog, path);
		if (f)
			fclose(f);
		return -1;
	}
	t->window = hdr[1];
	t->n = hdr[2];
	t->sizes = malloc((size_t)t->n * 4);
	t->slots = malloc((size_t)t->n * 4);
	if (!t->sizes || !t->slots || fread(t->sizes, 4, t->n, f) != t->n || fread(t->slots, 4, t->n, f) != t->n) {
		fprintf(stderr, "%s: %s: short file\n", prog, path);
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

/* The value in kB of field ("RssAnon:") in status, the text of /proc/self/status; -1 if absent. */
static inline long status_kb(const char *status, const char *field)
{
	const char *at = strstr(status, field);

	return at ? strtol(at + strlen(field), NULL, 10) : -1;
}

/*
 * Anonymous plus shared-memory resident pages: the heap, mmaps and an arena, not code pages. Read with
 * read(2) into the stack, not stdio: fopen() and its buffer are malloc'd, and the first malloc of a
 * thread that had none (an NTA producer) made glibc a thread arena, 12 KiB charged to the allocator
 * under test. The fields come early (about 400 bytes in), so 2 KiB of stack holds them without
 * touching another page of a thread's stack. -1 if they cannot be read.
 */
static inline long held_kb(void)
{
	char status[2048];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, status, sizeof(status) - 1);

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	status[n] = '\0';
	long anon = status_kb(status, "\nRssAnon:"), shmem = status_kb(status, "\nRssShmem:");
	return anon < 0 || shmem < 0 ? -1 : anon + shmem;
}

static inline double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

#endif /* NTA_BENCH_H */
