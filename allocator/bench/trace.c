// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * trace.c - replay an allocation trace with one allocator, in this process.
 *
 *   trace ALLOCATOR TRACEFILE REPEATS
 *
 * ALLOCATOR: nta | pow2 (linked in, arena in a memfd) | malloc (whatever
 * malloc this process has: glibc, or jemalloc/tcmalloc/mimalloc through
 * LD_PRELOAD). Every peer runs the identical trace in its own process.
 *
 * TRACEFILE: uint32 header {magic, window, n}, then n uint32 sizes, then n
 * uint32 slots. Step i frees the block in slots[i] (if any) and puts a new
 * block of sizes[i] there: a window of live blocks freed out of order.
 * The first `window` steps fill the window; the rest, cut into REPEATS equal
 * slices, are timed. Each block's first and last byte are written.
 *
 * Prints one line of JSON: ns per alloc+free pair for each slice, and the
 * peak memory the run added: anonymous plus shared-memory resident pages
 * (RssAnon + RssShmem: the heap, mmaps and the arena, not code pages, which
 * fault in with read-around and say nothing of an allocator), sampled after
 * the window is filled and after every timed slice, less the same before
 * the first allocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "nta.h"

enum which { W_MALLOC, W_NTA, W_POW2 };

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s nta|pow2|malloc TRACEFILE REPEATS\n", argv[0]);
		return 2;
	}
	enum which w = !strcmp(argv[1], "nta") ? W_NTA : !strcmp(argv[1], "pow2") ? W_POW2 : W_MALLOC;
	if (w == W_MALLOC && strcmp(argv[1], "malloc")) {
		fprintf(stderr, "trace: unknown allocator %s\n", argv[1]);
		return 2;
	}
	int repeats = atoi(argv[3]);
	struct trace t;
	if (repeats < 1 || trace_read("trace", argv[2], &t))
		return 2;
	uint32_t window = t.window, n = t.n, *sizes = t.sizes, *slots = t.slots;
	void **ptr = calloc(window, sizeof(void *));
	int64_t *off = calloc(window, sizeof(int64_t));
	uint32_t *held = calloc(window, 4);
	double *slice = calloc((size_t)repeats, sizeof(double));
	if (!ptr || !off || !held || !slice)
		return 1;

	struct nta_arena *a = NULL;
	uint8_t *base = NULL;
	uint64_t maxsz = 0;
	for (uint32_t i = 0; i < n; i++)
		maxsz = sizes[i] > maxsz ? sizes[i] : maxsz;
	if (w != W_MALLOC) {
		/* room for the whole window at its largest, twice over; reserved, committed as used */
		uint64_t pages = (uint64_t)window * ((maxsz + 4095) / 4096 + 1) * 2 + 64;
		struct nta_config cfg = { .kind = w == W_NTA ? NTA_KIND_NTA : NTA_KIND_POW2,
					  .max_pages = (uint32_t)pages };
		a = nta_arena_create(NULL, &cfg);
		if (!a) {
			perror("nta_arena_create");
			return 1;
		}
		base = nta_arena_base(a);
	}

	/* The driver's own arrays must be resident before the baseline: calloc'd
	 * pages are not, and would be charged to the allocator under test. A
	 * volatile index, so the compiler cannot drop the stores of zeros into
	 * memory it knows to be zero. */
	for (volatile size_t i = 0; i < window; i++)
		ptr[i] = NULL, off[i] = 0, held[i] = 0;
	long base_kb = held_kb(), peak_kb = base_kb;
	uint32_t timed = (n - window) / (uint32_t)repeats;
	for (uint32_t i = 0, r = 0; i < window + timed * (uint32_t)repeats; i++) {
		double t0 = 0;
		if (i >= window && (i - window) % timed == 0)
			t0 = now_ns();
		uint32_t s = slots[i], sz = sizes[i];
		uint8_t *p;
		if (w == W_MALLOC) {
			free(ptr[s]);
			p = ptr[s] = malloc(sz);
		} else {
			if (off[s] && nta_free(a, (uint64_t)off[s], held[s])) {
				fprintf(stderr, "trace: free failed at step %u\n", i);
				return 1;
			}
			off[s] = nta_alloc(a, sz, 0);
			if (off[s] <= 0) {
				fprintf(stderr, "trace: alloc(%u) failed at step %u: %s\n", sz, i, strerror((int)-off[s]));
				return 1;
			}
			held[s] = sz;
			p = base + off[s];
		}
		if (!p) {
			fprintf(stderr, "trace: malloc(%u) failed\n", sz);
			return 1;
		}
		p[0] = (uint8_t)i;
		p[sz - 1] = (uint8_t)i;
		if (i + 1 == window) { /* the window is full */
			long kb = held_kb();
			peak_kb = kb > peak_kb ? kb : peak_kb;
		}
		if (t0 != 0) { /* a slice starts here: time it to its end in one go */
			uint32_t end = i + timed;
			for (i++; i < end; i++) {
				s = slots[i];
				sz = sizes[i];
				if (w == W_MALLOC) {
					free(ptr[s]);
					p = ptr[s] = malloc(sz);
				} else {
					nta_free(a, (uint64_t)off[s], held[s]);
					off[s] = nta_alloc(a, sz, 0);
					if (__builtin_expect(off[s] <= 0, 0))
						abort();
					held[s] = sz;
					p = base + off[s];
				}
				p[0] = (uint8_t)i;
				p[sz - 1] = (uint8_t)i;
			}
			slice[r++] = (now_ns() - t0) / timed;
			long kb = held_kb();
			peak_kb = kb > peak_kb ? kb : peak_kb;
			i--;
		}
	}
	struct nta_stats st = { 0 };
	if (a) {
		char why[256];
		if (nta_check(a, why, sizeof(why))) {
			fprintf(stderr, "trace: nta_check after the run: %s\n", why);
			return 1;
		}
		nta_stats(a, &st);
	}
	qsort(slice, (size_t)repeats, sizeof(double), cmp_double);
	printf("{\"allocator\": \"%s\", \"window\": %u, \"steps\": %u, \"ns_per_pair\": [", argv[1], window, n);
	for (int r = 0; r < repeats; r++)
		printf("%s%.3f", r ? ", " : "", slice[r]);
	printf("], \"peak_rss_bytes\": %ld, \"arena_peak_committed_bytes\": %llu}\n",
	       (peak_kb - base_kb) * 1024, (unsigned long long)(st.peak_pages_committed * (a ? 4096u : 0u)));
	nta_arena_close(a);
	return 0;
}
