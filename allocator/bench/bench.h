/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bench.h - what the trace drivers (trace.c, xthread.c) share: the trace
 * file's magic, the memory a run holds, the clock, and sorting the times.
 */
#ifndef NTA_BENCH_H
#define NTA_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static inline long rss_kb(const char *field)
{
	char line[256];
	long v = -1;
	size_t n = strlen(field);
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n)) {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Anonymous plus shared-memory resident pages: the heap, mmaps and an arena, not code pages. */
static inline long held_kb(void)
{
	return rss_kb("RssAnon:") + rss_kb("RssShmem:");
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
