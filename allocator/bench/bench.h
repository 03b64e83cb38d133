/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bench.h - what the trace drivers (trace.c, xthread.c) share: the trace
 * file's magic, the memory a run holds, the clock, and sorting the times.
 */
#ifndef NTA_BENCH_H
#define NTA_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRACE_MAGIC 0x4e544154u /* "NTAT" */

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
