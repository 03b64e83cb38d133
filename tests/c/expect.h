/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * expect.h - the C tests' assertions: count every check, report every
 * failure with its place and values, and go on (main prints the totals).
 * Each test program includes it once.
 */
#ifndef NTA_TEST_EXPECT_H
#define NTA_TEST_EXPECT_H

#include <stdio.h>

static int failures, checks;

#define EXPECT_EQ(a, b)                                                                              \
	do {                                                                                         \
		long long _a = (long long)(a), _b = (long long)(b);                                  \
		checks++;                                                                            \
		if (_a != _b) {                                                                      \
			failures++;                                                                  \
			fprintf(stderr, "%s:%d: %s: %s is %lld, expected %lld\n", __FILE__, __LINE__, \
				__func__, #a, _a, _b);                                               \
		}                                                                                    \
	} while (0)

#define EXPECT(cond)                                                                              \
	do {                                                                                      \
		checks++;                                                                         \
		if (!(cond)) {                                                                    \
			failures++;                                                               \
			fprintf(stderr, "%s:%d: %s: expected %s\n", __FILE__, __LINE__, __func__, #cond); \
		}                                                                                 \
	} while (0)

/* A pool and its arena both pass their checkers (nta_pool_check, nta_check): a macro, so that only the
 * tests that use it need nta.h. */
#define EXPECT_CLEAN(pool, arena)                                                                     \
	do {                                                                                          \
		char why_[256];                                                                       \
		checks += 2;                                                                          \
		if (nta_pool_check((pool), why_, sizeof(why_))) {                                     \
			failures++;                                                                   \
			fprintf(stderr, "%s:%d: nta_pool_check: %s\n", __FILE__, __LINE__, why_);     \
		}                                                                                     \
		if (nta_check((arena), why_, sizeof(why_))) {                                         \
			failures++;                                                                   \
			fprintf(stderr, "%s:%d: nta_check: %s\n", __FILE__, __LINE__, why_);          \
		}                                                                                     \
	} while (0)

#endif /* NTA_TEST_EXPECT_H */
